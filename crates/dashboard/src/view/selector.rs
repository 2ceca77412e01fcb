//! Label selectors as `kubectl -l` takes them: `k=v`, `k==v`, `k!=v`, `k`,
//! `!k`, `k in (a,b)`, `k notin (a,b)`, joined by commas.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed selector: every requirement must hold. The empty selector
/// selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector(pub Vec<Requirement>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

impl Selector {
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let fail = |reason: &str| SelectorError { selector: text.to_string(), reason: reason.to_string() };
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let requirement = if let Some((key, values)) = set_term(term, " notin ") {
                Requirement::NotIn(key, values.ok_or_else(|| fail("notin needs (values)"))?)
            } else if let Some((key, values)) = set_term(term, " in ") {
                Requirement::In(key, values.ok_or_else(|| fail("in needs (values)"))?)
            } else if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(key(k).map_err(&fail)?, v.trim().to_string())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(key(k).map_err(&fail)?, v.trim().to_string())
            } else if let Some(k) = term.strip_prefix('!') {
                Requirement::NotExists(key(k).map_err(&fail)?)
            } else {
                Requirement::Exists(key(term).map_err(&fail)?)
            };
            requirements.push(requirement);
        }
        Ok(Selector(requirements))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        })
    }
}

fn key(text: &str) -> Result<String, &'static str> {
    let k = text.trim();
    if k.is_empty() || k.contains(char::is_whitespace) || k.contains(['(', ')', '!', '=']) {
        return Err("a key is a label name without spaces");
    }
    Ok(k.to_string())
}

/// `key op (a, b)`: the key and the values (`None` when the parentheses
/// are missing); `None` when `op` is not in the term.
fn set_term(term: &str, op: &str) -> Option<(String, Option<Vec<String>>)> {
    let (k, rest) = term.split_once(op)?;
    let k = key(k).ok()?;
    let inner = rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')'));
    Some((k, inner.map(|i| i.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())))
}

/// Splits on commas outside parentheses.
fn split_terms(text: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
}
