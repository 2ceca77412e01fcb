//! Pure view models: Kubernetes objects in, the rows and pages the browser
//! draws out. No I/O; `now` is passed in.

pub mod age;
pub mod apps;
pub mod cluster;
pub mod fleet;
pub mod hosted;
pub mod selector;

#[cfg(test)]
mod tests;
