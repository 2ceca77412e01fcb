use super::*;

type Headers = Vec<(String, String)>;
type ConfigData = BTreeMap<String, String>;
type Pairs<'a> = Vec<(&'a str, &'a str)>;

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn auth() -> RequestHeaderAuth {
    RequestHeaderAuth {
        client_ca_pem: "CA".into(),
        allowed_names: vec!["front-proxy-client".into()],
        username_headers: vec!["X-Remote-User".into()],
        group_headers: vec!["X-Remote-Group".into()],
    }
}

#[test]
fn routes_are_parsed_from_the_request_target() {
    let proxy = |cluster: &str, path: &str, query: &str| Route::Proxy {
        cluster: cluster.into(),
        path: path.into(),
        query: query.into(),
    };
    let cases: Vec<(&str, &str, Route)> = vec![
        ("pods of a namespace", "/apis/proxy.flotilla.io/v1alpha1/clusters/m1/proxy/api/v1/namespaces/shop/pods",
            proxy("m1", "/api/v1/namespaces/shop/pods", "")),
        ("logs with a query", "/apis/proxy.flotilla.io/v1alpha1/clusters/m1/proxy/api/v1/namespaces/shop/pods/web/log?follow=true&container=main",
            proxy("m1", "/api/v1/namespaces/shop/pods/web/log", "follow=true&container=main")),
        ("the member's root", "/apis/proxy.flotilla.io/v1alpha1/clusters/m1/proxy", proxy("m1", "/", "")),
        ("the member's root with a slash", "/apis/proxy.flotilla.io/v1alpha1/clusters/m1/proxy/", proxy("m1", "/", "")),
        ("tunnel", "/apis/proxy.flotilla.io/v1alpha1/clusters/edge-7/tunnel", Route::Tunnel { cluster: "edge-7".into() }),
        ("group list", "/apis", Route::Discovery(DiscoveryLevel::Groups)),
        ("group", "/apis/proxy.flotilla.io", Route::Discovery(DiscoveryLevel::Group)),
        ("resources", "/apis/proxy.flotilla.io/v1alpha1", Route::Discovery(DiscoveryLevel::Resources)),
        ("resources with a slash", "/apis/proxy.flotilla.io/v1alpha1/", Route::Discovery(DiscoveryLevel::Resources)),
        ("health", "/healthz", Route::Health),
        ("readiness with a query", "/readyz?verbose", Route::Health),
    ];
    for (name, target, want) in cases {
        assert_eq!(parse_route(target), want, "{name}");
    }
}

#[test]
fn malformed_routes_are_not_found_with_a_reason() {
    let cases: Vec<(&str, &str, &str)> = vec![
        ("another group", "/apis/apps/v1/deployments", "not served here"),
        (
            "a bad cluster name",
            "/apis/proxy.flotilla.io/v1alpha1/clusters/M1/proxy/api",
            "invalid cluster name",
        ),
        ("no subresource", "/apis/proxy.flotilla.io/v1alpha1/clusters/m1", "clusters/m1/proxy/<member path>"),
        (
            "unknown subresource",
            "/apis/proxy.flotilla.io/v1alpha1/clusters/m1/status",
            "clusters/m1/status is not served",
        ),
        (
            "climbing out",
            "/apis/proxy.flotilla.io/v1alpha1/clusters/m1/proxy/api/../../secret",
            "dot segments",
        ),
        ("a dot segment", "/apis/proxy.flotilla.io/v1alpha1/clusters/m1/proxy/./api", "dot segments"),
        ("empty segment", "/apis/proxy.flotilla.io/v1alpha1/clusters/m1/proxy//api", "empty segments"),
        ("tunnel with a path", "/apis/proxy.flotilla.io/v1alpha1/clusters/m1/tunnel/x", "not served"),
    ];
    for (name, target, want) in cases {
        match parse_route(target) {
            Route::NotFound(message) => assert!(message.contains(want), "{name}: {message}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn paths_compose_back_into_routes() {
    let path = proxy_path("m2", "/api/v1/pods");
    assert_eq!(path, "/apis/proxy.flotilla.io/v1alpha1/clusters/m2/proxy/api/v1/pods");
    assert_eq!(
        parse_route(&path),
        Route::Proxy { cluster: "m2".into(), path: "/api/v1/pods".into(), query: "".into() }
    );
    assert_eq!(parse_route(&tunnel_path("m2")), Route::Tunnel { cluster: "m2".into() });
}

#[test]
fn request_header_settings_come_from_the_configmap() {
    let data = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let full = data(&[
        ("requestheader-client-ca-file", "PEM"),
        ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
        ("requestheader-username-headers", r#"["X-Remote-User"]"#),
        ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
        ("requestheader-extra-headers-prefix", r#"["X-Remote-Extra-"]"#),
    ]);
    let cases: Vec<(&str, ConfigData, Result<RequestHeaderAuth, &str>)> = vec![
        (
            "complete",
            full.clone(),
            Ok(RequestHeaderAuth {
                client_ca_pem: "PEM".into(),
                allowed_names: vec!["front-proxy-client".into()],
                username_headers: vec!["X-Remote-User".into()],
                group_headers: vec!["X-Remote-Group".into()],
            }),
        ),
        ("no aggregation layer", data(&[("client-ca-file", "PEM")]), Err("aggregation layer")),
        ("no username header", data(&[("requestheader-client-ca-file", "PEM")]), Err("passes no user name")),
        (
            "malformed list",
            data(&[
                ("requestheader-client-ca-file", "PEM"),
                ("requestheader-username-headers", "X-Remote-User"),
            ]),
            Err("requestheader-username-headers"),
        ),
        (
            "allowed names empty",
            data(&[
                ("requestheader-client-ca-file", "PEM"),
                ("requestheader-username-headers", r#"["X-U"]"#),
                ("requestheader-allowed-names", ""),
            ]),
            Ok(RequestHeaderAuth {
                client_ca_pem: "PEM".into(),
                allowed_names: vec![],
                username_headers: vec!["X-U".into()],
                group_headers: vec![],
            }),
        ),
    ];
    for (name, data, want) in cases {
        match (request_header_auth(&data), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{name}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{name}: {got}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn only_allowed_front_proxy_names_assert_identities() {
    let any = RequestHeaderAuth { allowed_names: vec![], ..auth() };
    let listed = auth();
    let cases: Vec<(&str, &RequestHeaderAuth, Option<&str>, bool)> = vec![
        ("the apiserver's proxy client", &listed, Some("front-proxy-client"), true),
        ("another name under the CA", &listed, Some("mallory"), false),
        ("no common name", &listed, None, false),
        ("any name when none is listed", &any, Some("whoever"), true),
    ];
    for (name, auth, cn, want) in cases {
        assert_eq!(front_proxy_allowed(auth, cn), want, "{name}");
    }
}

#[test]
fn identities_are_read_from_the_front_proxy_headers() {
    let cases: Vec<(&str, Headers, Result<Identity, &str>)> = vec![
        (
            "user and groups",
            headers(&[
                ("x-remote-user", "alice"),
                ("X-Remote-Group", "dev"),
                ("X-Remote-Group", "system:authenticated"),
            ]),
            Ok(Identity { user: "alice".into(), groups: vec!["dev".into(), "system:authenticated".into()] }),
        ),
        (
            "no groups",
            headers(&[("X-Remote-User", "bob")]),
            Ok(Identity { user: "bob".into(), groups: vec![] }),
        ),
        ("no user", headers(&[("X-Remote-Group", "dev")]), Err("names no user")),
        ("an empty user", headers(&[("X-Remote-User", "")]), Err("names no user")),
        (
            "impersonation headers are not identities",
            headers(&[("Impersonate-User", "root")]),
            Err("names no user"),
        ),
    ];
    for (name, headers, want) in cases {
        match (identity_from_headers(&auth(), &headers), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{name}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{name}: {got}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn member_requests_impersonate_the_user_and_carry_no_other_identity() {
    let bob = Identity { user: "bob".into(), groups: vec![] };
    let alice = Identity { user: "alice".into(), groups: vec!["dev".into(), "system:authenticated".into()] };
    let cases: Vec<(&str, Headers, &Identity, Pairs)> = vec![
        (
            "content headers kept, identity added",
            headers(&[("Accept", "application/json"), ("User-Agent", "kubectl")]),
            &alice,
            vec![
                ("accept", "application/json"),
                ("user-agent", "kubectl"),
                ("impersonate-user", "alice"),
                ("impersonate-group", "dev"),
            ],
        ),
        (
            "credentials and claimed identities dropped",
            headers(&[
                ("Authorization", "Bearer hub-token"),
                ("Impersonate-User", "system:admin"),
                ("Impersonate-Group", "system:masters"),
                ("X-Remote-User", "alice"),
                ("X-Remote-Group", "dev"),
                ("Connection", "keep-alive"),
                ("Content-Type", "application/json"),
            ]),
            &alice,
            vec![
                ("content-type", "application/json"),
                ("impersonate-user", "alice"),
                ("impersonate-group", "dev"),
            ],
        ),
        ("no groups", vec![], &bob, vec![("impersonate-user", "bob")]),
    ];
    for (name, incoming, identity, want) in cases {
        let want: Vec<(String, String)> = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(member_request_headers(&incoming, identity), want, "{name}");
    }
}

#[test]
fn response_headers_are_filtered() {
    let incoming = headers(&[
        ("Content-Type", "text/plain"),
        ("Audit-Id", "a1"),
        ("Set-Cookie", "x"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
    ]);
    assert_eq!(
        user_response_headers(200, &incoming),
        headers(&[("content-type", "text/plain"), ("audit-id", "a1")])
    );
    let switching = headers(&[
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", "abc"),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
        ("Set-Cookie", "x"),
    ]);
    assert_eq!(
        user_response_headers(101, &switching),
        headers(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", "abc"),
            ("sec-websocket-protocol", "v5.channel.k8s.io")
        ])
    );
}

#[test]
fn upgrades_are_recognised_and_carried_to_the_member() {
    let cases: Vec<(&str, Headers, bool)> = vec![
        ("websocket", headers(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]), true),
        (
            "spdy, token list",
            headers(&[("Connection", "keep-alive, Upgrade"), ("Upgrade", "SPDY/3.1")]),
            true,
        ),
        ("no upgrade protocol", headers(&[("Connection", "Upgrade")]), false),
        ("plain", headers(&[("Connection", "keep-alive"), ("Upgrade", "websocket")]), false),
    ];
    for (name, incoming, want) in cases {
        assert_eq!(is_upgrade(&incoming), want, "{name}");
    }
    let alice = Identity { user: "alice".into(), groups: vec![] };
    let exec = headers(&[
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "k"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "v5.channel.k8s.io"),
        ("Impersonate-User", "root"),
    ]);
    let want = headers(&[
        ("upgrade", "websocket"),
        ("sec-websocket-key", "k"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-protocol", "v5.channel.k8s.io"),
        ("connection", "Upgrade"),
        ("impersonate-user", "alice"),
    ]);
    assert_eq!(member_request_headers(&exec, &alice), want);
    let not_upgrade = headers(&[("Upgrade", "websocket"), ("Sec-WebSocket-Key", "k")]);
    assert_eq!(member_request_headers(&not_upgrade, &alice), headers(&[("impersonate-user", "alice")]));
}

#[test]
fn only_a_clusters_own_agent_opens_its_tunnel() {
    let user = |u: &str| Identity { user: u.into(), groups: vec![membership::AGENT_GROUP.into()] };
    let cases: Vec<(&str, Identity, &str, Result<(), &str>)> = vec![
        ("its own agent", user(&membership::agent_user("m1")), "m1", Ok(())),
        (
            "another cluster's agent",
            user(&membership::agent_user("m2")),
            "m1",
            Err("the agent of cluster m2"),
        ),
        ("a person", user("alice"), "m1", Err("alice is not a cluster agent")),
    ];
    for (name, identity, cluster, want) in cases {
        match (tunnel_allowed(&identity, cluster), want) {
            (Ok(()), Ok(())) => {}
            (Err(got), Err(want)) => assert!(got.contains(want), "{name}: {got}"),
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn a_certificates_common_name_is_read() {
    let ca = flotilla_core::pki::CertificateAuthority::generate("test-ca").unwrap();
    let leaf = ca.issue(&flotilla_core::pki::LeafSpec::client("front-proxy-client", &[])).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
    assert_eq!(certificate_common_name(&block.contents).as_deref(), Some("front-proxy-client"));
    assert_eq!(certificate_common_name(b"not a certificate"), None);
}

#[test]
fn errors_and_discovery_are_kubernetes_documents() {
    let status = status_body(503, "ServiceUnavailable", "cluster m1 is not connected");
    assert_eq!((status["kind"].as_str(), status["code"].as_u64()), (Some("Status"), Some(503)));
    let resources = discovery_body(DiscoveryLevel::Resources);
    let names: Vec<&str> =
        resources["resources"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["clusters/proxy", "clusters/tunnel"]);
    assert_eq!(discovery_body(DiscoveryLevel::Group)["kind"], "APIGroup");
    assert_eq!(discovery_body(DiscoveryLevel::Groups)["groups"][0]["name"], GROUP);
}
