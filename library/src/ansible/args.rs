//! Module options the way Ansible checks them, done once for every module.
//!
//! Ansible hands a binary module its task options untouched: ad-hoc `-a k=v`
//! sends every value as a string and nothing fills defaults or checks
//! choices. This module owns that work. A module declares its options as a
//! [`Spec`] (Ansible's `argument_spec`); [`parse`] checks the raw args
//! object against it, coerces values the way `AnsibleModule` does, fills
//! defaults, splits off the `_ansible_*` keys into a [`Context`], and
//! reports every problem at once in Ansible's own wording. The normalised
//! object is then deserialised (serde) into the module's typed options.

use serde_json::{Map, Number, Value};

/// The type of one option, as in Ansible's `type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string; numbers and booleans are converted as Ansible converts them.
    Str,
    /// A boolean; accepts Ansible's spellings (`yes`, `no`, `on`, `1`, ...).
    Bool,
    /// An integer; accepts numeric strings.
    Int,
    /// A filesystem path on the target; a leading `~` is expanded.
    Path,
    /// A list whose elements have the given kind; a string is split on commas.
    List(&'static Kind),
    /// A dictionary whose values have the given kind; accepts a JSON string
    /// or `k=v` pairs.
    Dict(&'static Kind),
    /// Any JSON value, as given; the module checks it.
    Raw,
}

impl Kind {
    /// The name Ansible uses for the type in docs and messages.
    pub(crate) fn ansible_name(self) -> &'static str {
        match self {
            Kind::Str => "str",
            Kind::Bool => "bool",
            Kind::Int => "int",
            Kind::Path => "path",
            Kind::List(_) => "list",
            Kind::Dict(_) => "dict",
            Kind::Raw => "raw",
        }
    }
}

/// A default value of an option. (Not `Default`: that would shadow the
/// prelude's trait wherever options are declared.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    Str(&'static str),
    Bool(bool),
    Int(i64),
}

impl DefaultValue {
    fn to_value(self) -> Value {
        match self {
            DefaultValue::Str(s) => Value::from(s),
            DefaultValue::Bool(b) => Value::from(b),
            DefaultValue::Int(i) => Value::from(i),
        }
    }
}

/// One option of a module.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub default: Option<DefaultValue>,
    pub choices: &'static [&'static str],
    /// The value is a secret: never echoed in messages.
    pub no_log: bool,
    /// For an `Int`: the smallest and largest value accepted. Every number
    /// a module computes with is bounded here, so no later arithmetic on
    /// it (a deadline, a count) can overflow.
    pub range: Option<(i64, i64)>,
    /// One sentence for the module documentation.
    pub description: &'static str,
}

impl Opt {
    pub const fn new(name: &'static str, kind: Kind, description: &'static str) -> Self {
        Opt {
            name,
            kind,
            required: false,
            default: None,
            choices: &[],
            no_log: false,
            range: None,
            description,
        }
    }
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub const fn default(mut self, default: DefaultValue) -> Self {
        self.default = Some(default);
        self
    }
    pub const fn choices(mut self, choices: &'static [&'static str]) -> Self {
        self.choices = choices;
        self
    }
    pub const fn no_log(mut self) -> Self {
        self.no_log = true;
        self
    }
    pub const fn range(mut self, min: i64, max: i64) -> Self {
        self.range = Some((min, max));
        self
    }
    /// A number of seconds: 0 to [`MAX_SECONDS`].
    pub const fn seconds(self) -> Self {
        self.range(0, MAX_SECONDS)
    }
}

/// The longest wait any option may ask for: one week, in seconds. Longer
/// is a typo, and it keeps every deadline far from `Instant`'s limits.
pub const MAX_SECONDS: i64 = 7 * 24 * 3600;

/// A module's whole argument spec.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The module's short name, as Ansible names it in messages.
    pub module: &'static str,
    pub options: &'static [Opt],
    /// Groups of options of which at most one may be given.
    pub mutually_exclusive: &'static [&'static [&'static str]],
}

impl Spec {
    pub fn option(&self, name: &str) -> Option<&Opt> {
        self.options.iter().find(|o| o.name == name)
    }
}

/// What Ansible tells the module about the task beside its options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The module's name (`ops_pod`).
    pub module: &'static str,
    /// `--check`: plan only, change nothing.
    pub check_mode: bool,
    /// `--diff`: return what changed.
    pub diff: bool,
    /// `no_log: true` on the task.
    pub no_log: bool,
    /// `-v` count.
    pub verbosity: u8,
    /// Warnings the module adds while it runs; returned as `warnings`.
    pub warnings: Vec<String>,
}

impl Context {
    pub fn new(module: &'static str) -> Self {
        Context {
            module,
            ..Context::default()
        }
    }

    pub fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }
}

/// The options were wrong. Each entry is one complete message in Ansible's
/// wording; they are reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join_messages(.0))]
pub(crate) struct ArgsError(pub(crate) Vec<String>);

/// Ansible's own messages may end with a full stop; don't add a `;` to it.
fn join_messages(messages: &[String]) -> String {
    let mut joined = String::new();
    for message in messages {
        if !joined.is_empty() {
            joined.push_str(if joined.ends_with('.') { " " } else { "; " });
        }
        joined.push_str(message);
    }
    joined
}

/// Check `raw` against `spec`: returns the normalised options (coerced,
/// defaults filled, absent options left out) and the task context.
pub(crate) fn parse(spec: &Spec, raw: Value) -> Result<(Map<String, Value>, Context), ArgsError> {
    let raw = args_object(raw)?;
    let mut errors = Vec::new();
    let (context, user) = split_context(spec, raw, &mut errors);
    if let Some(message) = unsupported(spec, &user) {
        errors.push(message);
    }
    let options = check_options(spec, &user, &mut errors);
    check_exclusive(spec, &user, &mut errors);
    if errors.is_empty() {
        Ok((options, context))
    } else {
        Err(ArgsError(errors))
    }
}

/// The arguments as a JSON object, unwrapped from `ANSIBLE_MODULE_ARGS`.
fn args_object(raw: Value) -> Result<Map<String, Value>, ArgsError> {
    let mut raw = match raw {
        Value::Object(map) => map,
        other => {
            return Err(ArgsError(vec![format!(
                "module arguments must be a JSON object, got {}",
                python_type(&other)
            )]))
        }
    };
    // What Python modules receive on stdin; accepted so people can reuse it.
    if raw.len() == 1 {
        if let Some(Value::Object(inner)) = raw.remove("ANSIBLE_MODULE_ARGS") {
            raw = inner;
        }
    }
    Ok(raw)
}

/// Splits the `_ansible_*` keys off into the task context; the rest are
/// the user's options.
fn split_context(
    spec: &Spec,
    raw: Map<String, Value>,
    errors: &mut Vec<String>,
) -> (Context, Map<String, Value>) {
    let mut context = Context::new(spec.module);
    let mut user = Map::new();
    for (key, value) in raw {
        match key.as_str() {
            "_ansible_check_mode" => context.check_mode = internal_bool(&key, &value, errors),
            "_ansible_diff" => context.diff = internal_bool(&key, &value, errors),
            "_ansible_no_log" => context.no_log = internal_bool(&key, &value, errors),
            "_ansible_verbosity" => match to_int(&value) {
                Ok(v) => context.verbosity = u8::try_from(v.clamp(0, 255)).unwrap_or(u8::MAX),
                Err(e) => errors.push(format!("{key}: {e}")),
            },
            // Ansible adds new internal keys in new versions.
            k if k.starts_with("_ansible_") => {}
            _ => {
                user.insert(key, value);
            }
        }
    }
    (context, user)
}

/// Ansible's message for options the spec does not have, if any.
fn unsupported(spec: &Spec, user: &Map<String, Value>) -> Option<String> {
    let mut unsupported: Vec<&str> = user
        .keys()
        .map(String::as_str)
        .filter(|k| spec.option(k).is_none())
        .collect();
    if unsupported.is_empty() {
        return None;
    }
    unsupported.sort_unstable();
    let mut supported: Vec<&str> = spec.options.iter().map(|o| o.name).collect();
    supported.sort_unstable();
    Some(format!(
        "Unsupported parameters for ({}) module: {}. Supported parameters include: {}.",
        spec.module,
        unsupported.join(", "),
        supported.join(", ")
    ))
}

/// Every option of the spec: coerced and checked if given, its default if
/// not; the required ones missing are reported in one message.
fn check_options(
    spec: &Spec,
    user: &Map<String, Value>,
    errors: &mut Vec<String>,
) -> Map<String, Value> {
    let mut options = Map::new();
    let mut missing = Vec::new();
    for opt in spec.options {
        match user.get(opt.name) {
            None | Some(Value::Null) => {
                if opt.required {
                    missing.push(opt.name);
                } else if let Some(default) = opt.default {
                    options.insert(opt.name.to_owned(), default.to_value());
                }
            }
            Some(value) => match coerce(opt.kind, value) {
                Ok(value) => {
                    match check_choices(opt, &value).and_then(|()| check_range(opt, &value)) {
                        Ok(()) => {
                            options.insert(opt.name.to_owned(), value);
                        }
                        Err(e) => errors.push(e),
                    }
                }
                Err(reason) => errors.push(conversion_error(opt, value, reason)),
            },
        }
    }
    if !missing.is_empty() {
        missing.sort_unstable();
        errors.push(format!(
            "missing required arguments: {}",
            missing.join(", ")
        ));
    }
    options
}

/// Ansible's message for a value that is not of the option's type.
fn conversion_error(opt: &Opt, value: &Value, reason: String) -> String {
    format!(
        "argument '{}' is of type {} and we were unable to convert to {}: {}",
        opt.name,
        python_type(value),
        opt.kind.ansible_name(),
        match (opt.no_log, opt.kind) {
            // Which key is wrong is no secret; its value is.
            (true, Kind::Dict(element)) if reason.starts_with("key '") => format!(
                "{}: its value cannot be converted to {} (the value is hidden: no_log)",
                reason
                    .split_once("': ")
                    .map_or(reason.as_str(), |(k, _)| k)
                    .to_owned()
                    + "'",
                element.ansible_name()
            ),
            (true, _) => "the value is hidden (no_log)".to_owned(),
            (false, _) => reason,
        }
    )
}

fn check_exclusive(spec: &Spec, user: &Map<String, Value>, errors: &mut Vec<String>) {
    for group in spec.mutually_exclusive {
        let given = group
            .iter()
            .filter(|name| !matches!(user.get(**name), None | Some(Value::Null)))
            .count();
        if given > 1 {
            errors.push(format!(
                "parameters are mutually exclusive: {}",
                group.join("|")
            ));
        }
    }
}

fn internal_bool(key: &str, value: &Value, errors: &mut Vec<String>) -> bool {
    to_bool(value).unwrap_or_else(|e| {
        errors.push(format!("{key}: {e}"));
        false
    })
}

fn check_choices(opt: &Opt, value: &Value) -> Result<(), String> {
    if opt.choices.is_empty() {
        return Ok(());
    }
    let choices = opt.choices.join(", ");
    match value {
        Value::String(s) if !opt.choices.contains(&s.as_str()) => Err(format!(
            "value of {} must be one of: {choices}, got: {s}",
            opt.name
        )),
        Value::Array(items) => {
            let bad: Vec<&str> = items
                .iter()
                .filter_map(Value::as_str)
                .filter(|s| !opt.choices.contains(s))
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "value of {} must be one or more of: {choices}. Got no match for: {}",
                    opt.name,
                    bad.join(", ")
                ))
            }
        }
        _ => Ok(()),
    }
}

fn check_range(opt: &Opt, value: &Value) -> Result<(), String> {
    match (opt.range, value.as_i64()) {
        (Some((min, max)), Some(n)) if n < min || n > max => Err(format!(
            "value of {} must be between {min} and {max}, got: {n}",
            opt.name
        )),
        _ => Ok(()),
    }
}

/// The Python type name Ansible would print for a JSON value.
fn python_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

fn coerce(kind: Kind, value: &Value) -> Result<Value, String> {
    match kind {
        Kind::Raw => Ok(value.clone()),
        Kind::Str => to_str(value).map(Value::String),
        Kind::Path => to_str(value)
            .and_then(no_nul)
            .map(|s| Value::String(expand_home(s))),
        Kind::Bool => to_bool(value).map(Value::Bool),
        Kind::Int => to_int(value).map(|i| Value::Number(Number::from(i))),
        Kind::List(element) => coerce_list(*element, value),
        Kind::Dict(element) => coerce_dict(*element, value),
    }
}

/// A list, or a comma-separated string, each element coerced to `element`.
fn coerce_list(element: Kind, value: &Value) -> Result<Value, String> {
    let items: Vec<Value> = match value {
        Value::Array(items) => items.clone(),
        Value::String(s) if s.trim().is_empty() => Vec::new(),
        Value::String(s) => s.split(',').map(|item| Value::from(item.trim())).collect(),
        Value::Number(_) => vec![value.clone()],
        _ => return Err(format!("{} cannot be converted to a list", render(value))),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| coerce(element, item).map_err(|e| format!("element {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// A JSON object, or a string holding one or `k=v` pairs, each value
/// coerced to `element`.
fn coerce_dict(element: Kind, value: &Value) -> Result<Value, String> {
    let map = match value {
        Value::Object(map) => map.clone(),
        Value::String(s) if s.trim_start().starts_with(JSON_OBJECT_START) => {
            match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(map)) => map,
                _ => return Err("the string is not a valid JSON object".to_owned()),
            }
        }
        Value::String(s) => key_value_pairs(s)?,
        _ => return Err(format!("{} cannot be converted to a dict", render(value))),
    };
    map.into_iter()
        .map(|(k, v)| {
            coerce(element, &v)
                .map(|v| (k.clone(), v))
                .map_err(|e| format!("key '{k}': {e}"))
        })
        .collect::<Result<Map<_, _>, _>>()
        .map(Value::Object)
}

/// How a string holding a JSON object starts (Ansible's test, too).
const JSON_OBJECT_START: char = '{';

/// `k1=v1, k2=v2` or `k1=v1 k2=v2`, as Ansible's `check_type_dict` reads it.
fn key_value_pairs(s: &str) -> Result<Map<String, Value>, String> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), Value::from(v))),
            _ => Err(format!(
                "dictionary requested, could not parse JSON or key=value: '{pair}' is not key=value"
            )),
        })
        .collect()
}

fn render(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}

fn to_str(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        // What Python's str() gives, which is what Ansible passes on.
        Value::Bool(true) => Ok("True".to_owned()),
        Value::Bool(false) => Ok("False".to_owned()),
        _ => Err(format!(
            "{} cannot be converted to a str",
            python_type(value)
        )),
    }
}

const TRUE_WORDS: &[&str] = &["y", "yes", "on", "1", "true", "t"];
const FALSE_WORDS: &[&str] = &["n", "no", "off", "0", "false", "f"];

/// Ansible's `boolean()`: the same spellings, the same refusal.
pub(crate) fn to_bool(value: &Value) -> Result<bool, String> {
    let word = match value {
        Value::Bool(b) => return Ok(*b),
        Value::String(s) => s.trim().to_ascii_lowercase(),
        Value::Number(n) if n.as_f64() == Some(1.0) => return Ok(true),
        Value::Number(n) if n.as_f64() == Some(0.0) => return Ok(false),
        other => other.to_string(),
    };
    if TRUE_WORDS.contains(&word.as_str()) {
        Ok(true)
    } else if FALSE_WORDS.contains(&word.as_str()) {
        Ok(false)
    } else {
        let valid: Vec<String> = TRUE_WORDS
            .iter()
            .chain(FALSE_WORDS)
            .map(|w| format!("'{w}'"))
            .collect();
        Err(format!(
            "The value {} is not a valid boolean. Valid booleans include: {}",
            render(value),
            valid.join(", ")
        ))
    }
}

fn to_int(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .ok_or_else(|| format!("{n} cannot be converted to an int")),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("'{s}' cannot be converted to an int")),
        other => Err(format!(
            "{} cannot be converted to an int",
            python_type(other)
        )),
    }
}

/// A path with a NUL byte names no file: refused here, where the option is
/// named, rather than by the first system call that meets it.
fn no_nul(path: String) -> Result<String, String> {
    if path.contains('\0') {
        Err("the path contains a NUL byte, which no file name can hold".to_owned())
    } else {
        Ok(path)
    }
}

fn expand_home(path: String) -> String {
    let rest = match path.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => return path,
    };
    match std::env::var("HOME") {
        Ok(home) if !home.is_empty() => format!("{home}{rest}"),
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: Spec = Spec {
        module: "ops_test",
        options: &[
            Opt::new("name", Kind::Str, "a name").required(),
            Opt::new("count", Kind::Int, "a count").default(DefaultValue::Int(3)),
            Opt::new("force", Kind::Bool, "a flag").default(DefaultValue::Bool(false)),
            Opt::new("state", Kind::Str, "a state")
                .choices(&["present", "absent"])
                .default(DefaultValue::Str("present")),
            Opt::new("path", Kind::Path, "a path"),
            Opt::new("uri", Kind::Str, "a uri"),
            Opt::new("tags", Kind::List(&Kind::Str), "tags"),
            Opt::new("env", Kind::Dict(&Kind::Str), "secrets").no_log(),
        ],
        mutually_exclusive: &[&["path", "uri"]],
    };

    fn ok(raw: Value) -> (Map<String, Value>, Context) {
        parse(&SPEC, raw).expect("valid")
    }

    fn err(raw: Value) -> String {
        parse(&SPEC, raw).expect_err("invalid").to_string()
    }

    #[test]
    fn a_secret_dict_names_the_key_whose_value_is_wrong_but_not_the_value() {
        let message = err(json!({"name": "x", "env": {"TOKEN": ["s3cr3t"]}}));
        assert_eq!(
            message,
            "argument 'env' is of type dict and we were unable to convert to dict: key 'TOKEN': \
             its value cannot be converted to str (the value is hidden: no_log)"
        );
        assert!(!message.contains("s3cr3t"));
    }

    #[test]
    fn defaults_are_filled_and_absent_options_left_out() {
        let (options, context) = ok(json!({"name": "x"}));
        assert_eq!(
            Value::Object(options),
            json!({"name": "x", "count": 3, "force": false, "state": "present"})
        );
        assert!(!context.check_mode);
    }

    #[test]
    fn ansible_spellings_are_coerced() {
        for (word, expected) in [
            ("yes", true),
            ("no", false),
            ("True", true),
            ("off", false),
            ("1", true),
            ("0", false),
        ] {
            let (options, _) = ok(json!({"name": "x", "force": word}));
            assert_eq!(options["force"], json!(expected), "{word}");
        }
        let (options, _) = ok(json!({"name": 1001, "count": " 7 ", "tags": "a, b"}));
        assert_eq!(options["name"], json!("1001"));
        assert_eq!(options["count"], json!(7));
        assert_eq!(options["tags"], json!(["a", "b"]));
    }

    #[test]
    fn dicts_accept_json_and_key_value_strings() {
        let (options, _) = ok(json!({"name": "x", "env": "A=1, B=two"}));
        assert_eq!(options["env"], json!({"A": "1", "B": "two"}));
        let (options, _) = ok(json!({"name": "x", "env": "{\"A\": 5}"}));
        assert_eq!(options["env"], json!({"A": "5"}));
    }

    #[test]
    fn null_counts_as_absent() {
        let (options, _) = ok(json!({"name": "x", "count": null}));
        assert_eq!(options["count"], json!(3));
    }

    #[test]
    fn internal_keys_fill_the_context_and_unknown_ones_are_ignored() {
        let (_, context) = ok(json!({
            "name": "x",
            "_ansible_check_mode": "yes",
            "_ansible_diff": true,
            "_ansible_no_log": "False",
            "_ansible_verbosity": "3",
            "_ansible_some_future_key": {"a": 1},
        }));
        assert!(context.check_mode);
        assert!(context.diff);
        assert!(!context.no_log);
        assert_eq!(context.verbosity, 3);
    }

    #[test]
    fn python_module_style_wrapper_is_accepted() {
        let (options, _) = ok(json!({"ANSIBLE_MODULE_ARGS": {"name": "x"}}));
        assert_eq!(options["name"], json!("x"));
    }

    #[test]
    fn every_problem_is_reported_in_ansible_wording() {
        insta::assert_snapshot!(err(
            json!({"foo": 1, "bar": 2, "count": "many", "state": "gone", "path": "/a", "uri": "http://b", "force": "maybe"})
        ));
    }

    #[test]
    fn secrets_are_not_echoed_in_type_errors() {
        let message = err(json!({"name": "x", "env": "hunter2"}));
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("argument 'env'"), "{message}");
    }

    #[test]
    fn a_path_with_a_nul_byte_is_refused_naming_the_option() {
        insta::assert_snapshot!(err(json!({"name": "x", "path": "/var/lib\0/x"})));
    }

    #[test]
    fn non_object_arguments_are_refused() {
        assert_eq!(
            err(json!(["name"])),
            "module arguments must be a JSON object, got list"
        );
    }
}
