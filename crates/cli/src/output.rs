//! The output flags of the `get` commands, as kubectl has them:
//! `-o wide|json|yaml` and `-l/--selector`, and how objects are printed
//! as JSON or YAML (a `List` of them, as `kubectl get -o json` does).

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The table with more columns.
    Wide,
    /// The objects as JSON (a List of them when listing).
    Json,
    /// The objects as YAML (a List of them when listing).
    Yaml,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ListArgs {
    /// Output format: wide (more columns), json or yaml (the objects themselves) [default: a table]
    #[arg(long, short = 'o', value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
    /// Label selector, as kubectl's: e.g. -l env=prod,tier!=web or -l 'region in (eu,us)'
    #[arg(long, short = 'l', value_name = "SELECTOR")]
    pub selector: Option<String>,
}

impl ListArgs {
    /// The list parameters that select the labels asked for (the API server
    /// filters, and refuses a malformed selector with its reason).
    pub fn list_params(&self) -> kube::api::ListParams {
        let params = kube::api::ListParams::default();
        match &self.selector {
            Some(selector) => params.labels(selector),
            None => params,
        }
    }

    pub fn wide(&self) -> bool {
        self.output == Some(OutputFormat::Wide)
    }

    /// "" or " matching -l SELECTOR", for messages about an empty list.
    pub fn matching(&self) -> String {
        self.selector.as_deref().map(|s| format!(" matching -l {s}")).unwrap_or_default()
    }
}

/// `-n/-A` of the list commands, as kubectl's: one namespace (the
/// kubeconfig context's by default) or every namespace.
#[derive(Args, Debug, Clone, Default)]
pub struct NamespaceScope {
    /// The namespace [default: the kubeconfig context's, else default]
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Every namespace (as kubectl's -A)
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

impl NamespaceScope {
    /// The namespace to list in (None: every namespace); `context` is the
    /// kubeconfig context's namespace.
    pub fn namespace<'a>(&'a self, context: &'a str) -> Option<&'a str> {
        (!self.all_namespaces).then(|| self.namespace.as_deref().unwrap_or(context))
    }

    /// The API of `K` the scope lists from.
    pub fn api<K>(&self, client: kube::Client) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        let context = client.default_namespace().to_string();
        match self.namespace(&context) {
            Some(namespace) => kube::Api::namespaced(client, namespace),
            None => kube::Api::all(client),
        }
    }

    /// "namespace NS" or "any namespace", for messages about an empty list.
    pub fn place(&self, context: &str) -> String {
        match self.namespace(context) {
            Some(namespace) => format!("namespace {namespace}"),
            None => "any namespace".to_string(),
        }
    }
}

/// Why listing `kind` failed, said so that a person can act on it: a
/// selector the API server refused, Flotilla's resources not installed, or
/// the error as it is.
pub fn list_failure(kind: &str, list: &ListArgs, error: kube::Error) -> String {
    match (&error, &list.selector) {
        (kube::Error::Api(status), Some(selector)) if status.code == 400 => {
            format!("the label selector -l {selector:?} is not valid: {}", status.message)
        }
        (kube::Error::Api(status), _) if status.code == 404 => {
            format!("the hub has no {kind}: is `flotilla hub install` done? ({})", status.message)
        }
        _ => format!("listing {kind}: {error}"),
    }
}

/// An object as printed: without `metadata.managedFields` (kubectl hides
/// them too unless asked).
pub fn printable<T: Serialize>(object: &T) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(object)?;
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
    }
    Ok(value)
}

/// The objects as `kubectl get -o json` prints a list: `kind: List`.
pub fn list_document<T: Serialize>(items: &[T]) -> Result<Value, serde_json::Error> {
    let items = items.iter().map(printable).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}))
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot print as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot print as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

/// `document` as JSON (indented, as kubectl) or YAML; `None` for the table
/// formats (the caller prints its table).
pub fn render_document(
    document: &Value,
    format: Option<OutputFormat>,
) -> Result<Option<String>, RenderError> {
    match format {
        Some(OutputFormat::Json) => Ok(Some(serde_json::to_string_pretty(document)?)),
        Some(OutputFormat::Yaml) => Ok(Some(serde_saphyr::to_string(document)?)),
        Some(OutputFormat::Wide) | None => Ok(None),
    }
}

/// A borderless table as kubectl prints, fitted to the terminal's width
/// when stdout is one (a pipe gets whole lines, for grep).
pub fn table(header: Vec<&str>) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING).set_header(header);
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    }
    t
}

/// "5s", "3m", "2h", "4d" (as kubectl's AGE).
pub fn age(
    created: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now: k8s_openapi::jiff::Timestamp,
) -> String {
    let Some(created) = created else { return "-".into() };
    let secs = now.duration_since(created.0).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_scope_is_kubectls() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            scope: NamespaceScope,
        }
        // (arguments, the namespace listed with context "team-a", the place said)
        let cases: &[(&[&str], Option<&str>, &str)] = &[
            (&[], Some("team-a"), "namespace team-a"),
            (&["-n", "shop"], Some("shop"), "namespace shop"),
            (&["--namespace=shop"], Some("shop"), "namespace shop"),
            (&["-A"], None, "any namespace"),
        ];
        for (args, want, place) in cases {
            let cli = Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).unwrap();
            assert_eq!(cli.scope.namespace("team-a"), *want, "{args:?}");
            assert_eq!(cli.scope.place("team-a"), *place, "{args:?}");
        }
        // -n and -A together are refused, as kubectl's are not silently one of them.
        assert!(Cli::try_parse_from(["x", "-n", "shop", "-A"]).is_err());
    }

    #[test]
    fn lists_print_as_kubectl_lists_without_managed_fields() {
        let objects = vec![
            json!({"apiVersion": "x/v1", "kind": "A", "metadata": {"name": "a", "managedFields": [{"manager": "m"}]}}),
            json!({"apiVersion": "x/v1", "kind": "A", "metadata": {"name": "b", "labels": {"env": "prod"}}}),
        ];
        let document = list_document(&objects).unwrap();
        struct Case {
            format: Option<OutputFormat>,
            parse: fn(&str) -> Value,
        }
        let cases = [
            Case { format: Some(OutputFormat::Json), parse: |s| serde_json::from_str(s).unwrap() },
            Case { format: Some(OutputFormat::Yaml), parse: |s| serde_saphyr::from_str(s).unwrap() },
        ];
        for c in cases {
            let text = render_document(&document, c.format).unwrap().unwrap();
            let back = (c.parse)(&text);
            assert_eq!(back["kind"], "List", "{:?}", c.format);
            let names: Vec<&str> = back["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["a", "b"], "{:?}", c.format);
            assert!(back["items"][0]["metadata"].get("managedFields").is_none(), "{:?}: {text}", c.format);
            assert_eq!(back["items"][1]["metadata"]["labels"]["env"], "prod", "{:?}", c.format);
        }
        for table_format in [None, Some(OutputFormat::Wide)] {
            assert!(render_document(&document, table_format).unwrap().is_none(), "{table_format:?}");
        }
    }

    #[test]
    fn list_failures_say_what_to_fix() {
        let api = |code: u16, message: &str| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: message.into(),
                ..Default::default()
            }))
        };
        let selected = ListArgs { selector: Some("env in prod".into()), ..Default::default() };
        let cases = [
            (
                "a refused selector",
                api(400, "unable to parse"),
                &selected,
                "the label selector -l \"env in prod\" is not valid: unable to parse",
            ),
            ("no selector, 400 as it is", api(400, "bad"), &ListArgs::default(), "listing ManagedClusters: "),
            (
                "not installed",
                api(404, "the server could not find"),
                &ListArgs::default(),
                "is `flotilla hub install` done?",
            ),
        ];
        for (name, error, list, want) in cases {
            let said = list_failure("ManagedClusters", list, error);
            assert!(said.contains(want), "{name}: {said}");
        }
    }

    #[test]
    fn flags_parse_as_kubectl_s() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            list: ListArgs,
        }
        let cases: [(&[&str], Option<OutputFormat>, Option<&str>); 5] = [
            (&["x"], None, None),
            (&["x", "-o", "wide"], Some(OutputFormat::Wide), None),
            (&["x", "-ojson"], Some(OutputFormat::Json), None),
            (&["x", "--output", "yaml", "-l", "env=prod"], Some(OutputFormat::Yaml), Some("env=prod")),
            (&["x", "--selector", "a in (b,c)"], None, Some("a in (b,c)")),
        ];
        for (args, output, selector) in cases {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!((cli.list.output, cli.list.selector.as_deref()), (output, selector), "{args:?}");
            assert_eq!(cli.list.wide(), output == Some(OutputFormat::Wide));
        }
        assert!(Cli::try_parse_from(["x", "-o", "xml"]).is_err());
        let selected = ListArgs { selector: Some("env=prod".into()), ..Default::default() };
        assert_eq!(selected.list_params().label_selector.as_deref(), Some("env=prod"));
        assert_eq!(selected.matching(), " matching -l env=prod");
        assert_eq!(ListArgs::default().list_params().label_selector, None);
    }
}
