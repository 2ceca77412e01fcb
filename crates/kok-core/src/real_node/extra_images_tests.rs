use super::*;

fn listed(name: &str, size: u64, modified_ns: i64) -> ListedFile {
    ListedFile { name: name.into(), size, modified_ns }
}

fn imported(name: &str, size: u64, modified_ns: i64, images: &[&str]) -> ImportedFile {
    ImportedFile {
        file: name.into(),
        size,
        modified_ns,
        images: images.iter().map(|s| s.to_string()).collect(),
        error: None,
        tried_at: 100,
    }
}

fn failed(name: &str, size: u64, modified_ns: i64, tried_at: i64) -> ImportedFile {
    ImportedFile {
        file: name.into(),
        size,
        modified_ns,
        images: Vec::new(),
        error: Some("ctr: unexpected EOF".into()),
        tried_at,
    }
}

#[test]
fn a_cluster_has_a_directory_of_its_own_under_clusters() {
    assert_eq!(
        cluster_images_dir(Path::new("/var/cache/flotilla/images"), "team-a", "web"),
        PathBuf::from("/var/cache/flotilla/images/clusters/team-a.web")
    );
}

#[test]
fn a_loaded_file_keeps_its_name_made_one_the_agents_import() {
    let cases = [
        ("hello.tar", Some("hello.tar")),
        ("hello.oci", Some("hello.oci.tar")),
        (".hidden.tar", Some("hidden.tar")),
        ("..", None),
        (".tar", None),
        ("a/b.tar", None),
    ];
    for (given, want) in cases {
        let got = file_name_in_dir(given);
        assert_eq!(got.as_deref(), want, "{given}");
        if let Some(name) = got {
            assert!(is_image_file(&name), "{name}");
        }
    }
}

#[test]
fn each_file_is_imported_once_and_again_when_it_changes_or_after_a_failure() {
    let now = 1_000;
    type Case = (&'static str, Vec<ListedFile>, Vec<ImportedFile>, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        ("an empty directory imports nothing", vec![], vec![], vec![]),
        (
            "new tarballs, in name order",
            vec![listed("b.tar", 10, 5), listed("a.tar", 10, 5)],
            vec![],
            vec!["a.tar", "b.tar"],
        ),
        (
            "only tarballs, not hidden copies in progress or other files",
            vec![
                listed(".a.tar.tmp-1", 10, 5),
                listed(".b.tar", 10, 5),
                listed("notes.txt", 1, 1),
                listed(".tar", 1, 1),
                listed("c.tar", 3, 3),
            ],
            vec![],
            vec!["c.tar"],
        ),
        (
            "a file imported before is not imported again (an agent restart keeps the record)",
            vec![listed("a.tar", 10, 5)],
            vec![imported("a.tar", 10, 5, &["x/a:1"])],
            vec![],
        ),
        (
            "a file rewritten (new modification time) is imported again",
            vec![listed("a.tar", 10, 6)],
            vec![imported("a.tar", 10, 5, &["x/a:1"])],
            vec!["a.tar"],
        ),
        (
            "a file of another size is imported again",
            vec![listed("a.tar", 11, 5)],
            vec![imported("a.tar", 10, 5, &["x/a:1"])],
            vec!["a.tar"],
        ),
        (
            "a failed file is not tried again at once",
            vec![listed("a.tar", 10, 5)],
            vec![failed("a.tar", 10, 5, now - RETRY_FAILED_SECONDS + 1)],
            vec![],
        ),
        (
            "a failed file is tried again after the retry delay",
            vec![listed("a.tar", 10, 5)],
            vec![failed("a.tar", 10, 5, now - RETRY_FAILED_SECONDS)],
            vec!["a.tar"],
        ),
        (
            "a failed file that changed is tried again at once",
            vec![listed("a.tar", 12, 5)],
            vec![failed("a.tar", 10, 5, now)],
            vec!["a.tar"],
        ),
    ];
    for (name, listing, record, want) in cases {
        let got: Vec<String> = to_import(&listing, &record, now).into_iter().map(|f| f.name).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn outcomes_are_recorded_per_file_and_make_the_node_status() {
    let mut record = Vec::new();
    record_outcome(&mut record, &listed("b.tar", 1, 1), Ok(vec!["x/b:1".into(), "x/a:1".into()]), 10);
    record_outcome(&mut record, &listed("a.tar", 1, 1), Ok(vec!["x/a:1".into()]), 10);
    record_outcome(&mut record, &listed("c.tar", 1, 1), Err("ctr: unexpected EOF\n  more\n".into()), 11);
    assert_eq!(record.iter().map(|r| r.file.as_str()).collect::<Vec<_>>(), ["a.tar", "b.tar", "c.tar"]);
    assert_eq!(record[2].error.as_deref(), Some("ctr: unexpected EOF more"), "one line");
    let (images, message) = node_status(&record);
    assert_eq!(images, ["x/a:1", "x/b:1"], "sorted, once each");
    assert_eq!(message.as_deref(), Some("cannot import c.tar: ctr: unexpected EOF more"));

    // The file fixed: the failure is replaced by its images.
    record_outcome(&mut record, &listed("c.tar", 2, 2), Ok(vec!["x/c:1".into()]), 12);
    assert_eq!(node_status(&record), (vec!["x/a:1".into(), "x/b:1".into(), "x/c:1".into()], None));

    // A long error is cut.
    record_outcome(&mut record, &listed("d.tar", 1, 1), Err("e".repeat(1000)), 13);
    assert_eq!(record[3].error.as_ref().map(|e| e.chars().count()), Some(MAX_ERROR));
}

#[test]
fn failures_of_removed_files_are_forgotten_and_imports_kept() {
    let mut record =
        vec![imported("a.tar", 1, 1, &["x/a:1"]), failed("b.tar", 1, 1, 0), failed("c.tar", 1, 1, 0)];
    forget_removed_failures(&mut record, &[listed("c.tar", 1, 1)]);
    assert_eq!(record.iter().map(|r| r.file.as_str()).collect::<Vec<_>>(), ["a.tar", "c.tar"]);
}

#[test]
fn a_failure_is_found_in_a_message_by_its_file_name() {
    let message = "the sandbox is gone; cannot import a.tar: ctr: bad; thing; cannot import ba.tar: ctr: no";
    let cases =
        [("a.tar", Some("ctr: bad; thing")), ("ba.tar", Some("ctr: no")), ("b.tar", None), ("c.tar", None)];
    for (file, want) in cases {
        assert_eq!(failure_of(message, file).as_deref(), want, "{file}");
    }
}

#[test]
fn tar_members_are_found_by_their_clean_path() {
    let cases = [
        ("index.json", Some(Member::Index)),
        ("./index.json", Some(Member::Index)),
        ("oci-layout", Some(Member::OciLayout)),
        ("./manifest.json", Some(Member::Manifest)),
        ("blobs/sha256/index.json", None),
        ("index.json.bak", None),
    ];
    for (path, want) in cases {
        assert_eq!(member(path), want, "{path}");
    }
}

#[test]
fn an_archive_names_its_images_as_ctr_imports_them() {
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();
    let index = |annotations: &str| {
        format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"sha256:ab","size":1,"annotations":{annotations}}}]}}"#)
            .into_bytes()
    };
    let oci = |annotations: &str| ArchiveMembers {
        oci_layout: Some(layout.clone()),
        index: Some(index(annotations)),
        manifest: None,
    };
    let docker =
        |text: &str| ArchiveMembers { manifest: Some(text.as_bytes().to_vec()), ..Default::default() };
    type Case = (&'static str, ArchiveMembers, Result<Vec<&'static str>, ArchiveError>);
    let cases: Vec<Case> = vec![
        (
            "containerd's name annotation",
            oci(r#"{"io.containerd.image.name":"flotilla.local/hello:1"}"#),
            Ok(vec!["flotilla.local/hello:1"]),
        ),
        (
            "containerd's name wins over the OCI ref name",
            oci(r#"{"io.containerd.image.name":"example.com/a:1","org.opencontainers.image.ref.name":"1"}"#),
            Ok(vec!["example.com/a:1"]),
        ),
        (
            "a full OCI ref name",
            oci(r#"{"org.opencontainers.image.ref.name":"example.com/app:2"}"#),
            Ok(vec!["example.com/app:2"]),
        ),
        (
            "a bare tag is no name",
            oci(r#"{"org.opencontainers.image.ref.name":"2"}"#),
            Err(ArchiveError::NoName),
        ),
        ("no annotations at all", oci("{}"), Err(ArchiveError::NoName)),
        (
            "docker save: RepoTags, normalized",
            docker(r#"[{"Config":"c.json","RepoTags":["busybox","flotilla.local/busybox:1"],"Layers":[]}]"#),
            Ok(vec!["docker.io/library/busybox:latest", "flotilla.local/busybox:1"]),
        ),
        (
            "docker save of an untagged image",
            docker(r#"[{"Config":"c.json","RepoTags":null,"Layers":[]}]"#),
            Err(ArchiveError::NoName),
        ),
        (
            "an OCI layout wins over a docker manifest (docker 25 writes both)",
            ArchiveMembers {
                manifest: Some(br#"[{"RepoTags":["other:1"]}]"#.to_vec()),
                ..oci(r#"{"io.containerd.image.name":"example.com/a:1"}"#)
            },
            Ok(vec!["example.com/a:1"]),
        ),
        ("neither", ArchiveMembers::default(), Err(ArchiveError::NotAnImage)),
        (
            "an index without its layout file is not an OCI layout",
            ArchiveMembers { index: Some(index("{}")), ..Default::default() },
            Err(ArchiveError::NotAnImage),
        ),
        (
            "a layout without index.json",
            ArchiveMembers { oci_layout: Some(layout.clone()), ..Default::default() },
            Err(ArchiveError::NoIndex),
        ),
        (
            "a layout of another version",
            ArchiveMembers { oci_layout: Some(br#"{"imageLayoutVersion":"2.0.0"}"#.to_vec()), ..oci("{}") },
            Err(ArchiveError::LayoutVersion("2.0.0".into())),
        ),
    ];
    for (name, members, want) in cases {
        let want = want.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(archive_images(&members), want, "{name}");
    }
    let bad = ArchiveMembers { oci_layout: Some(layout), index: Some(b"{".to_vec()), manifest: None };
    let err = archive_images(&bad).unwrap_err().to_string();
    assert!(err.starts_with("its index.json is not what it should be"), "{err}");
    assert!(ArchiveError::NoName.to_string().contains("io.containerd.image.name"));
}

#[test]
fn references_are_normalized_like_docker_does() {
    let cases = [
        ("busybox", Some("docker.io/library/busybox:latest")),
        ("busybox:1", Some("docker.io/library/busybox:1")),
        ("user/app:2", Some("docker.io/user/app:2")),
        ("docker.io/busybox:1", Some("docker.io/library/busybox:1")),
        ("docker.io/user/app:1", Some("docker.io/user/app:1")),
        ("flotilla.local/hello:1", Some("flotilla.local/hello:1")),
        ("localhost/app", Some("localhost/app:latest")),
        ("localhost:5000/app:3", Some("localhost:5000/app:3")),
        ("example.com/a@sha256:ab", Some("example.com/a@sha256:ab")),
        ("", None),
    ];
    for (reference, want) in cases {
        assert_eq!(normalize(reference).as_deref(), want, "{reference}");
    }
}

fn node(name: &str, images: &[&str], message: Option<&str>) -> NodeImages {
    NodeImages {
        node: name.into(),
        machine: format!("m-{name}"),
        images: images.iter().map(|s| s.to_string()).collect(),
        message: message.map(Into::into),
    }
}

#[test]
fn a_load_is_done_when_every_node_reports_every_image() {
    let files = vec![
        LoadedFile { file: "a.tar".into(), images: vec!["x/a:1".into()] },
        LoadedFile { file: "b.tar".into(), images: vec!["x/b:1".into(), "x/b:2".into()] },
    ];
    let failure = Some("cannot import b.tar: ctr: unexpected EOF");
    struct Case {
        name: &'static str,
        nodes: Vec<NodeImages>,
        failures_count: bool,
        want: Verdict,
    }
    let cases = [
        Case {
            name: "nothing reported yet",
            nodes: vec![node("n1", &[], None), node("n2", &[], None)],
            failures_count: true,
            want: Verdict::Pending("0 of 6 images loaded; waiting for x/a:1 on node n1".into()),
        },
        Case {
            name: "one node has them all, the other one",
            nodes: vec![
                node("n1", &["x/a:1", "x/b:1", "x/b:2", "other:1"], None),
                node("n2", &["x/a:1"], None),
            ],
            failures_count: true,
            want: Verdict::Pending("4 of 6 images loaded; waiting for x/b:1 on node n2".into()),
        },
        Case {
            name: "every image on every node",
            nodes: vec![
                node("n1", &["x/a:1", "x/b:1", "x/b:2"], None),
                node("n2", &["x/a:1", "x/b:1", "x/b:2"], None),
            ],
            failures_count: true,
            want: Verdict::Done("6 images loaded on 2 nodes".into()),
        },
        Case {
            name: "a failure waits for the images still pending elsewhere",
            nodes: vec![node("n1", &["x/a:1"], failure), node("n2", &[], None)],
            failures_count: true,
            want: Verdict::Pending("1 of 6 images loaded; waiting for x/a:1 on node n2".into()),
        },
        Case {
            name: "a failure with nothing else pending fails the load",
            nodes: vec![node("n1", &["x/a:1"], failure), node("n2", &["x/a:1", "x/b:1", "x/b:2"], None)],
            failures_count: true,
            want: Verdict::Failed("2 of 6 images not loaded; x/b:1 on node n1: ctr: unexpected EOF".into()),
        },
        Case {
            name: "right after the copy a failure may be the replaced file's: still pending",
            nodes: vec![node("n1", &["x/a:1"], failure), node("n2", &["x/a:1", "x/b:1", "x/b:2"], None)],
            failures_count: false,
            want: Verdict::Pending("4 of 6 images loaded; waiting for x/b:1 on node n1".into()),
        },
    ];
    for case in cases {
        let rows = load_rows(&case.nodes, &files, case.failures_count);
        assert_eq!(rows.len(), 6, "{}", case.name);
        assert_eq!(load_verdict(&rows), case.want, "{}", case.name);
    }
    let rows = load_rows(&[node("n1", &["x/a:1"], failure)], &files, true);
    let states: Vec<String> = rows.iter().map(|r| format!("{} {} {}", r.machine, r.image, r.state)).collect();
    assert_eq!(
        states,
        [
            "m-n1 x/a:1 Loaded",
            "m-n1 x/b:1 Failed: ctr: unexpected EOF",
            "m-n1 x/b:2 Failed: ctr: unexpected EOF"
        ]
    );
}
