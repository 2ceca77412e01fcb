#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The membership commands as a user runs them: `hub install`, `hub run`,
//! `token create`, `join`, `cluster accept`, `get clusters`, `unjoin`.

mod hub_cli;

use std::time::{Duration, Instant};

use hub_cli::{flotilla, text, HubAndMember};

#[tokio::test]
async fn token_join_accept_get_and_unjoin_from_the_command_line() {
    let env = HubAndMember::start(&[]).await;
    let (member, home, hub_kc) = (&env.member, &env.home, env.hub_kc.clone());
    let bootstrap = home.path().join("bootstrap.kubeconfig");
    let out = flotilla(
        &["token", "create", "--kubeconfig", &hub_kc, "--ttl-hours", "1", "-o", bootstrap.to_str().unwrap()],
        home.path(),
    );
    assert!(out.status.success(), "{}", text(&out));

    // join waits for acceptance; accept it from another shell meanwhile.
    let member_kc = member.kubeconfig_path().to_str().unwrap().to_string();
    let join = {
        let (home, bootstrap, member_kc) = (home.path().to_path_buf(), bootstrap.clone(), member_kc.clone());
        std::thread::spawn(move || {
            flotilla(
                &[
                    "join",
                    "m1",
                    "--hub-kubeconfig",
                    bootstrap.to_str().unwrap(),
                    "--kubeconfig",
                    &member_kc,
                    "--timeout",
                    "60",
                ],
                &home,
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = flotilla(&["cluster", "accept", "m1", "--kubeconfig", &hub_kc], home.path());
        if out.status.success() {
            break;
        }
        assert!(text(&out).contains("has asked to join"), "{}", text(&out));
        assert!(Instant::now() < deadline, "m1 never asked to join");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = join.join().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let agent_dir = home.path().join(".flotilla/agents/m1");
    let pid: u32 = std::fs::read_to_string(agent_dir.join("agent.pid")).unwrap().trim().parse().unwrap();
    assert!(flotilla_localkube::process::pid_alive(pid));

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = flotilla(&["get", "clusters", "--kubeconfig", &hub_kc], home.path());
        let shown = text(&out);
        let row = shown.lines().find(|l| l.trim_start().starts_with("m1")).unwrap_or("").to_string();
        if row.split_whitespace().collect::<Vec<_>>().get(3) == Some(&"True") {
            assert!(row.contains("1/1") && row.contains(flotilla_localkube::DEFAULT_K8S_VERSION), "{shown}");
            break;
        }
        assert!(Instant::now() < deadline, "m1 never Available:\n{shown}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A name that is not a DNS label is refused before anything happens.
    let out = flotilla(
        &["join", "Bad_Name", "--hub-kubeconfig", bootstrap.to_str().unwrap(), "--kubeconfig", &member_kc],
        home.path(),
    );
    assert!(!out.status.success() && text(&out).contains("invalid cluster name"), "{}", text(&out));

    let out = flotilla(&["unjoin", "m1", "--kubeconfig", &hub_kc], home.path());
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(15);
    while flotilla_localkube::process::pid_alive(pid) {
        assert!(Instant::now() < deadline, "the agent kept running after unjoin");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!agent_dir.join("hub.kubeconfig").exists());
    let out = flotilla(&["get", "clusters", "--kubeconfig", &hub_kc], home.path());
    assert!(text(&out).contains("No clusters"), "{}", text(&out));
}
