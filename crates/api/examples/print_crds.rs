//! Prints Flotilla's CRDs as YAML-compatible JSON (for `kubectl apply -f -`).
fn main() {
    for crd in flotilla_api::crds() {
        println!("{}", serde_json::to_string_pretty(&crd).unwrap_or_default());
    }
}
