//! The shape of the workspace, checked: which module of a crate imports which,
//! and the circles in that graph (a module that imports one that imports it
//! back, directly or around a longer loop).
//!
//! A module is one source file (`lib.rs`, `a.rs`, `a/mod.rs`, `a/b.rs`);
//! what an inline module uses counts for the file that holds it. An edge
//! `a -> b` is any path in `a`'s production code that names `b` or an item
//! of `b`: `use` trees, expressions, types, macros' paths. Not edges:
//! - code under `#[cfg(test)]` (a test may reach anywhere);
//! - a `mod b;` declaration (declaring a child is not using it);
//! - a public `use` (`pub use b::Thing`): a re-export is the parent's
//!   facade for its users, not code of its own that depends on `b`.
//!
//! Parsing is `syn`'s, so comments, strings and doc text never count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module's path from its crate root (`[]` is the root, `["apps", "binder"]`
/// is `crate::apps::binder`).
pub type ModPath = Vec<String>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing {path}: {source}")]
    Parse { path: PathBuf, source: syn::Error },
    #[error("module {module} of {parent} has no file ({tried})")]
    MissingModule { module: String, parent: PathBuf, tried: String },
}

/// One module's source and the child modules it declares with `mod x;`.
#[derive(Clone, Default)]
pub struct ModuleSource {
    pub file: PathBuf,
    pub children: BTreeSet<String>,
    pub syntax: Option<syn::File>,
}

/// The modules of the crate whose root file is `root` (`src/lib.rs`,
/// `src/main.rs` or `src/bin/x.rs`), found by following `mod x;`
/// declarations that are not under `#[cfg(test)]`.
pub fn crate_modules(root: &Path) -> Result<BTreeMap<ModPath, ModuleSource>, Error> {
    let mut modules = BTreeMap::new();
    let mut pending = vec![(Vec::new(), root.to_path_buf())];
    while let Some((path, file)) = pending.pop() {
        let text =
            std::fs::read_to_string(&file).map_err(|source| Error::Read { path: file.clone(), source })?;
        let syntax = syn::parse_file(&text).map_err(|source| Error::Parse { path: file.clone(), source })?;
        let children = declared_children(&syntax);
        // Children of `lib.rs`, `main.rs` and `mod.rs` live beside them;
        // children of `a.rs` live in `a/`.
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let child_dir = if path.is_empty() || stem == "mod" || stem == "lib" || stem == "main" {
            dir
        } else {
            dir.join(stem)
        };
        for child in &children {
            let flat = child_dir.join(format!("{child}.rs"));
            let nested = child_dir.join(child).join("mod.rs");
            let child_file = if flat.exists() {
                flat
            } else if nested.exists() {
                nested
            } else {
                return Err(Error::MissingModule {
                    module: child.clone(),
                    parent: file.clone(),
                    tried: format!("{} or {}", flat.display(), nested.display()),
                });
            };
            let mut child_path = path.clone();
            child_path.push(child.clone());
            pending.push((child_path, child_file));
        }
        modules.insert(path, ModuleSource { file, children, syntax: Some(syntax) });
    }
    Ok(modules)
}

/// `mod x;` declarations of a file outside `#[cfg(test)]`.
fn declared_children(file: &syn::File) -> BTreeSet<String> {
    file.items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Mod(m) if m.content.is_none() && !is_test_only(&m.attrs) => Some(m.ident.to_string()),
            _ => None,
        })
        .collect()
}

/// Whether `attrs` hold `#[cfg(test)]`.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

/// The module-to-module edges of a crate: for each module, the other
/// modules its production code names.
pub fn edges(modules: &BTreeMap<ModPath, ModuleSource>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let known: BTreeSet<&ModPath> = modules.keys().collect();
    let mut out = BTreeMap::new();
    for (path, module) in modules {
        let Some(syntax) = &module.syntax else { continue };
        let mut collector =
            PathCollector { scope: path.clone(), children: module.children.clone(), found: Vec::new() };
        collector.visit_file(syntax);
        let targets: BTreeSet<ModPath> = collector
            .found
            .into_iter()
            .filter_map(|named| longest_module_prefix(&named, &known))
            .filter(|target| target != path)
            .collect();
        out.insert(path.clone(), targets);
    }
    out
}

/// The longest prefix of `named` that is a module of the crate (the module
/// that defines the named item, or the named module itself).
fn longest_module_prefix(named: &[String], known: &BTreeSet<&ModPath>) -> Option<ModPath> {
    (0..=named.len()).rev().map(|n| named[..n].to_vec()).find(|prefix| known.contains(prefix))
}

/// Collects every crate-relative path a module's production code names.
struct PathCollector {
    /// The module the visitor is in (grows inside inline modules).
    scope: ModPath,
    /// Child modules declared in the scope (a path may start with one).
    children: BTreeSet<String>,
    found: Vec<ModPath>,
}

impl PathCollector {
    /// `segments` resolved from the current scope, if they start with
    /// `crate`, `self`, `super` or a child module.
    fn resolve(&self, segments: &[String]) -> Option<ModPath> {
        let first = segments.first()?;
        match first.as_str() {
            "crate" => Some(segments[1..].to_vec()),
            "self" => Some([self.scope.as_slice(), &segments[1..]].concat()),
            "super" => {
                let ups = segments.iter().take_while(|s| *s == "super").count();
                let base = self.scope.len().checked_sub(ups)?;
                Some([&self.scope[..base], &segments[ups..]].concat())
            }
            child if self.children.contains(child) => Some([self.scope.as_slice(), segments].concat()),
            _ => None,
        }
    }

    fn record(&mut self, segments: &[String]) {
        if let Some(path) = self.resolve(segments) {
            self.found.push(path);
        }
    }

    fn record_use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.record_use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.record(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.record(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.record(&prefix.clone()),
            syn::UseTree::Group(g) => {
                for item in &g.items {
                    self.record_use_tree(prefix, item);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for PathCollector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        if item_attrs(item).is_some_and(is_test_only) {
            return;
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        let Some((_, items)) = &module.content else { return };
        let outer_children = std::mem::replace(&mut self.children, declared_children_of(items));
        self.scope.push(module.ident.to_string());
        for item in items {
            self.visit_item(item);
        }
        self.scope.pop();
        self.children = outer_children;
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if matches!(item.vis, syn::Visibility::Inherited) {
            self.record_use_tree(&mut Vec::new(), &item.tree);
        }
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_test_only(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    /// `pub(crate)`, `pub(super)`, `pub(in path)` say who may use an item;
    /// they are not a use of that module.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    /// Outside a `use`, a path names a module only with more after it
    /// (`clusters::x`): a bare name is a value or a type (a local
    /// `clusters` is not the module `clusters`).
    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.segments.len() > 1 {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.record(&segments);
        }
        syn::visit::visit_path(self, path);
    }
}

fn declared_children_of(items: &[syn::Item]) -> BTreeSet<String> {
    items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Mod(m) if !is_test_only(&m.attrs) => Some(m.ident.to_string()),
            _ => None,
        })
        .collect()
}

fn item_attrs(item: &syn::Item) -> Option<&[syn::Attribute]> {
    use syn::Item::*;
    Some(match item {
        Const(i) => &i.attrs,
        Enum(i) => &i.attrs,
        ExternCrate(i) => &i.attrs,
        Fn(i) => &i.attrs,
        ForeignMod(i) => &i.attrs,
        Impl(i) => &i.attrs,
        Macro(i) => &i.attrs,
        Mod(i) => &i.attrs,
        Static(i) => &i.attrs,
        Struct(i) => &i.attrs,
        Trait(i) => &i.attrs,
        TraitAlias(i) => &i.attrs,
        Type(i) => &i.attrs,
        Union(i) => &i.attrs,
        Use(i) => &i.attrs,
        _ => return None,
    })
}

/// The circles of a graph: each strongly connected set of two or more
/// modules (Tarjan's algorithm), sorted.
pub fn circles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'g ModPath, usize>,
        low: BTreeMap<&'g ModPath, usize>,
        stack: Vec<&'g ModPath>,
        on_stack: BTreeSet<&'g ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    impl<'g> Tarjan<'g> {
        fn connect(&mut self, node: &'g ModPath) {
            let n = self.index.len();
            self.index.insert(node, n);
            self.low.insert(node, n);
            self.stack.push(node);
            self.on_stack.insert(node);
            for next in self.graph.get(node).into_iter().flatten() {
                if !self.graph.contains_key(next) {
                    continue;
                }
                if !self.index.contains_key(next) {
                    self.connect(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut members = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    members.push(top.clone());
                    if top == node {
                        break;
                    }
                }
                if members.len() > 1 {
                    members.sort();
                    self.out.push(members);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for node in graph.keys() {
        if !t.index.contains_key(node) {
            t.connect(node);
        }
    }
    t.out.sort();
    t.out
}

/// `crate::a::b` for a module path.
pub fn display(path: &ModPath) -> String {
    std::iter::once("crate").chain(path.iter().map(String::as_str)).collect::<Vec<_>>().join("::")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate from (module path, source) pairs; children are the modules
    /// one level below each path.
    fn modules(sources: &[(&str, &str)]) -> BTreeMap<ModPath, ModuleSource> {
        let path =
            |p: &str| -> ModPath { p.split("::").filter(|s| !s.is_empty()).map(String::from).collect() };
        let all: Vec<ModPath> = sources.iter().map(|(p, _)| path(p)).collect();
        sources
            .iter()
            .map(|(p, text)| {
                let me = path(p);
                let children = all
                    .iter()
                    .filter(|c| c.len() == me.len() + 1 && c.starts_with(&me))
                    .map(|c| c[me.len()].clone())
                    .collect();
                (
                    me,
                    ModuleSource {
                        file: PathBuf::new(),
                        children,
                        syntax: Some(syn::parse_file(text).unwrap()),
                    },
                )
            })
            .collect()
    }

    fn names(circles: Vec<Vec<ModPath>>) -> Vec<Vec<String>> {
        circles.iter().map(|c| c.iter().map(display).collect()).collect()
    }

    /// (case name, the crate's modules as (path, source), the circles).
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a [&'a str]]);

    #[test]
    fn circles_table() {
        let cases: &[Case] = &[
            ("one way is fine", &[("", ""), ("a", "use crate::b::f;"), ("b", "pub fn f() {}")], &[]),
            (
                "two siblings importing each other",
                &[("", ""), ("a", "use crate::b::f; pub fn g() {}"), ("b", "pub fn f() { crate::a::g() }")],
                &[&["crate::a", "crate::b"]],
            ),
            (
                "a loop of three through super",
                &[
                    ("", ""),
                    ("a", "use super::b::f;"),
                    ("b", "pub fn f() { super::c::h() }"),
                    ("c", "pub fn h() { let _ = crate::a::X; }"),
                ],
                &[&["crate::a", "crate::b", "crate::c"]],
            ),
            (
                "a parent using its child that uses the parent",
                &[
                    ("", ""),
                    ("p", "pub struct S; fn f() { c::g() }"),
                    ("p::c", "pub fn g() { let _ = super::S; }"),
                ],
                &[&["crate::p", "crate::p::c"]],
            ),
            (
                "a re-export is not an edge",
                &[
                    ("", ""),
                    ("p", "pub use c::g; pub struct S;"),
                    ("p::c", "pub fn g() { let _ = super::S; }"),
                ],
                &[],
            ),
            (
                "a visibility restriction is not an edge",
                &[
                    ("", "fn run() { p::start() }"),
                    ("p", "pub(crate) fn start() { c::g() } pub(super) struct S;"),
                    ("p::c", "pub(super) fn g() {} pub(in crate::p) struct T;"),
                ],
                &[],
            ),
            (
                "test code is not an edge",
                &[
                    ("", ""),
                    ("a", "pub fn g() {} #[cfg(test)] mod tests { use crate::b::f; }"),
                    ("b", "pub fn f() { crate::a::g() }"),
                ],
                &[],
            ),
            (
                "grouped use trees count",
                &[("", ""), ("a", "use crate::{b::{f, G}, c};"), ("b", "use crate::a as x;"), ("c", "")],
                &[&["crate::a", "crate::b"]],
            ),
            (
                "a local named like a module is not that module",
                &[("", "pub fn g() {} fn f() { let b = 1; let _ = b + 1; }"), ("b", "use crate::g;")],
                &[],
            ),
            (
                "a path through a module still counts",
                &[("", "pub fn g() {} fn f() { b::h() }"), ("b", "use crate::g; pub fn h() {}")],
                &[&["crate", "crate::b"]],
            ),
            (
                "names in comments and strings do not count",
                &[
                    ("", ""),
                    ("a", "/// crate::b::f\nfn g() { let _ = \"crate::b\"; }"),
                    ("b", "use crate::a;"),
                ],
                &[],
            ),
        ];
        for (name, sources, want) in cases {
            let got = names(circles(&edges(&modules(sources))));
            let want: Vec<Vec<String>> =
                want.iter().map(|c| c.iter().map(|s| s.to_string()).collect()).collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
