//! What the dashboard's browser test and benchmark share: users with
//! tokens on a hub, and running the Playwright script in Debian's Chromium
//! under a line protocol (the script says what it waits for, the test
//! answers once it changed the fleet).

use std::path::PathBuf;
use std::process::Stdio;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A ServiceAccount `name` in `default` bound to the ClusterRole `role`,
/// and a token for it.
pub async fn user_token(hub: &Client, name: &str, role: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(hub.clone(), "default");
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    accounts.patch(name, &PatchParams::apply("test"), &Patch::Apply(&account)).await.unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("dashboard-test-{name}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": "default"}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(hub.clone())
        .patch(&format!("dashboard-test-{name}"), &PatchParams::apply("test"), &Patch::Apply(&binding))
        .await
        .unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() }),
        ..Default::default()
    };
    let answer = accounts.create_token_request(name, &PostParams::default(), &request).await.unwrap();
    answer.status.unwrap().token.unwrap()
}

/// A ClusterRole that reads Flotilla's resources and Events and writes
/// nothing.
pub async fn install_viewer_role(hub: &Client) {
    let role: ClusterRole = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "flotilla-dashboard-viewer"},
        "rules": [
            {"apiGroups": ["cluster.flotilla.io", "work.flotilla.io", "kok.flotilla.io", "rollout.flotilla.io", "policy.flotilla.io"],
             "resources": ["*"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]}],
    }))
    .unwrap();
    Api::<ClusterRole>::all(hub.clone())
        .patch("flotilla-dashboard-viewer", &PatchParams::apply("test"), &Patch::Apply(&role))
        .await
        .unwrap();
}

/// The dashboard server's own identity: reads what its shared watches
/// read, and impersonates certificate users. Nothing else.
pub async fn install_server_role(hub: &Client) {
    let role: ClusterRole = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "flotilla-dashboard-server"},
        "rules": [
            {"apiGroups": ["cluster.flotilla.io", "work.flotilla.io", "kok.flotilla.io", "rollout.flotilla.io"],
             "resources": ["*"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["users", "groups"], "verbs": ["impersonate"]}],
    }))
    .unwrap();
    Api::<ClusterRole>::all(hub.clone())
        .patch("flotilla-dashboard-server", &PatchParams::apply("test"), &Patch::Apply(&role))
        .await
        .unwrap();
}

/// A ClusterRole `dashboard-test-one-cluster` that may get the
/// ManagedCluster `cluster` only, and a Role in `namespace` that may list
/// its bindings (bound to the ServiceAccount `user` of `default`).
pub async fn install_scoped_user_rbac(hub: &Client, user: &str, cluster: &str, namespace: &str) {
    let role: ClusterRole = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "dashboard-test-one-cluster"},
        "rules": [{"apiGroups": ["cluster.flotilla.io"], "resources": ["managedclusters"],
            "resourceNames": [cluster], "verbs": ["get"]}],
    }))
    .unwrap();
    Api::<ClusterRole>::all(hub.clone())
        .patch("dashboard-test-one-cluster", &PatchParams::apply("test"), &Patch::Apply(&role))
        .await
        .unwrap();
    let role: Role = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "dashboard-test-bindings", "namespace": namespace},
        "rules": [{"apiGroups": ["work.flotilla.io"], "resources": ["resourcebindings"], "verbs": ["get", "list", "watch"]}],
    }))
    .unwrap();
    Api::<Role>::namespaced(hub.clone(), namespace)
        .patch("dashboard-test-bindings", &PatchParams::apply("test"), &Patch::Apply(&role))
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "dashboard-test-bindings", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "dashboard-test-bindings"},
        "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": "default"}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(hub.clone(), namespace)
        .patch("dashboard-test-bindings", &PatchParams::apply("test"), &Patch::Apply(&binding))
        .await
        .unwrap();
}

/// Where the browser's screenshots go: `$CARGO_TARGET_DIR/test-artefacts/dashboard`.
pub fn artefacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("test-artefacts/dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// playwright-core as `scripts/test-tools.sh` installs it.
pub fn node_modules() -> PathBuf {
    match std::env::var_os("FLOTILLA_E2E_NODE_MODULES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap())
            .join(".cache/flotilla/dashboard-e2e/node_modules"),
    }
}

/// A running Playwright script (`e2e/<script>`), spoken to line by line.
pub struct Script {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Script {
    pub fn start(script: &str, env: &[(&str, String)]) -> Script {
        let modules = node_modules();
        assert!(
            modules.join("playwright-core").exists(),
            "playwright-core is not installed in {}: run scripts/test-tools.sh",
            modules.display()
        );
        let mut command = Command::new("node");
        command
            // From this crate's tests or another's (the hosted page's test
            // lives with the `flotilla` binary the kok site needs).
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboard/e2e").join(script))
            .env("NODE_PATH", &modules)
            .env("ARTEFACTS", artefacts_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("node runs (scripts/test-tools.sh installs it)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Script { child, stdin, stdout }
    }

    /// The script's next protocol line (other output is echoed).
    pub async fn next(&mut self) -> Option<String> {
        while let Some(line) = self.stdout.next_line().await.unwrap() {
            if let Some(message) = line.strip_prefix("@@ ") {
                return Some(message.to_string());
            }
            println!("[browser] {line}");
        }
        None
    }

    pub async fn expect(&mut self, prefix: &str) -> String {
        let line = self.next().await.unwrap_or_else(|| panic!("the script ended before {prefix}"));
        assert!(line.starts_with(prefix), "expected {prefix}, the script said {line}");
        line
    }

    pub async fn say(&mut self, line: &str) {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    pub async fn wait(mut self) -> bool {
        self.child.wait().await.unwrap().success()
    }
}
