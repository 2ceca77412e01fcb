//! One RFC 6902 operation (`add`, `remove`, `replace`) on a JSON value,
//! with messages that say what is wrong (json-patch only says "path is
//! invalid"). Used by the plaintext overrider on the manifest and by the
//! fieldOverrider on a document held in a string.

use flotilla_api::policy::OverriderOperator;
use serde_json::{json, Value};

fn operator_name(op: OverriderOperator) -> &'static str {
    match op {
        OverriderOperator::Add => "add",
        OverriderOperator::Remove => "remove",
        OverriderOperator::Replace => "replace",
    }
}

/// Applies one operation at `path` (a JSON pointer) in `doc`: `remove` and
/// `replace` need the path to exist, `add` its parent.
pub(crate) fn apply_operation(
    doc: &mut Value,
    path: &str,
    operator: OverriderOperator,
    value: Option<&Value>,
) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} is not a JSON pointer (it must start with /)"));
    }
    let op = operator_name(operator);
    // Diagnose the usual mistakes ourselves: json-patch only says "path is
    // invalid".
    match operator {
        OverriderOperator::Remove | OverriderOperator::Replace => {
            if doc.pointer(path).is_none() {
                return Err(format!("path {path} does not exist"));
            }
        }
        OverriderOperator::Add => {
            let (parent, last) = path.rsplit_once('/').unwrap_or(("", path));
            match doc.pointer(parent) {
                None => return Err(format!("path {parent} does not exist")),
                Some(Value::Object(_)) => {}
                Some(Value::Array(items)) => {
                    let fits = last == "-" || last.parse::<usize>().is_ok_and(|i| i <= items.len());
                    if !fits {
                        let len = items.len();
                        return Err(format!(
                            "cannot add at {path}: {parent} has {len} items (use an index up to {len}, or -)"
                        ));
                    }
                }
                Some(_) => return Err(format!("cannot add at {path}: {parent} is not an object or a list")),
            }
        }
    }
    let operation = match (operator, value) {
        (OverriderOperator::Remove, _) => json!({"op": op, "path": path}),
        (_, Some(value)) => json!({"op": op, "path": path, "value": value}),
        (_, None) => return Err(format!("{op} at {path} needs a value")),
    };
    let operation: json_patch::PatchOperation =
        serde_json::from_value(operation).map_err(|e| format!("invalid {op} at {path}: {e}"))?;
    json_patch::patch(doc, &[operation]).map_err(|e| format!("cannot {op} at {path}: {}", e.kind))
}
