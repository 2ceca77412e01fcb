//! Every crate of the workspace, checked: no module imports a module that
//! imports it back (see the crate docs for what counts as an import).

use std::path::Path;

use flotilla_arch_check::{circles, crate_modules, display, edges};

#[test]
fn no_module_of_the_workspace_imports_one_that_imports_it_back() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut roots = Vec::new();
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        for root in ["lib.rs", "main.rs"] {
            if src.join(root).exists() {
                roots.push(src.join(root));
            }
        }
        if let Ok(bins) = std::fs::read_dir(src.join("bin")) {
            roots.extend(bins.map(|b| b.unwrap().path()));
        }
    }
    roots.sort();
    assert!(roots.len() >= 10, "found only {roots:?}");
    let mut found = Vec::new();
    for root in &roots {
        let modules = crate_modules(root).unwrap();
        for circle in circles(&edges(&modules)) {
            let names: Vec<String> = circle.iter().map(display).collect();
            found.push(format!("{}: {}", root.display(), names.join(" <-> ")));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}
