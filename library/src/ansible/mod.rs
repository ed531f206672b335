//! The Ansible binary-module protocol, once, for every `ops_*` module.
//!
//! A module binary's `main` calls [`main`] with its [`Module`] type. The
//! runner reads the args JSON (the file named by argv\[1\], or standard
//! input when there is no argument), checks it against the module's
//! [`Spec`], deserialises the typed options, runs the module and prints
//! exactly one JSON object on stdout. Every error, and every panic, becomes
//! `{"failed": true, "msg": ...}` with the whole error chain: Ansible can't
//! read anything else ("Module result deserialization failed").

pub mod args;

use std::cell::{Cell, RefCell};
use std::io::{IsTerminal, Read, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub use args::{Context, DefaultValue, Kind, Opt, Spec};

/// One Ansible module.
pub trait Module {
    /// The module's argument spec; its `module` field is the module's name.
    const SPEC: Spec;
    /// Typed options, deserialised from the checked and coerced arguments.
    type Options: DeserializeOwned;
    /// Do the work (or, in check mode, plan it).
    fn run(options: Self::Options, context: &mut Context) -> Result<Outcome, Failure>;
}

/// What a module reports when it succeeds.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// The host changed (or, in check mode, would change).
    pub changed: bool,
    pub msg: String,
    /// The module could not act in check mode and did nothing.
    pub skipped: bool,
    /// Shown with `--diff`: an object or a list of objects.
    pub diff: Option<Value>,
    /// Set as host facts by Ansible: a JSON object, already serialized.
    pub facts: Option<Box<RawValue>>,
    /// Module-specific return values.
    pub values: Map<String, Value>,
}

/// What a module reports when it fails.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The whole error chain, outermost first.
    pub msg: String,
    /// Whether the host was changed before the failure.
    pub changed: bool,
    pub values: Map<String, Value>,
}

impl Failure {
    pub fn new(msg: impl Into<String>) -> Self {
        Failure {
            msg: msg.into(),
            changed: false,
            values: Map::new(),
        }
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure::new(error_chain(&error))
    }
}

/// An error and its sources joined by `: `, outermost first, skipping a
/// source whose text its parent already ends with.
/// Every part passes through [`crate::decode::content_free`]: no message
/// carries bytes of a file that was named as an archive and is not one.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut msg = crate::decode::content_free(&error.to_string()).into_owned();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = crate::decode::content_free(&cause.to_string()).into_owned();
        if !msg.ends_with(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = cause.source();
    }
    msg
}

/// Where the module arguments come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ArgsSource {
    File(std::path::PathBuf),
    Stdin,
}

impl ArgsSource {
    /// argv\[1\] when given, else standard input.
    pub(crate) fn from_args(
        mut args: impl Iterator<Item = std::ffi::OsString>,
    ) -> Result<Self, String> {
        let _program = args.next();
        let source = match args.next() {
            Some(path) => ArgsSource::File(path.into()),
            None => ArgsSource::Stdin,
        };
        if args.next().is_some() {
            return Err("expected at most one argument: the path of the args JSON file".into());
        }
        Ok(source)
    }

    fn read(&self) -> Result<Value, String> {
        let (text, origin) = match self {
            ArgsSource::File(path) => (
                std::fs::read(path).map_err(|e| {
                    format!(
                        "cannot read the module arguments from {}: {e}",
                        path.display()
                    )
                })?,
                path.display().to_string(),
            ),
            ArgsSource::Stdin => {
                let mut stdin = std::io::stdin();
                if stdin.is_terminal() {
                    return Err("no arguments: give the path of an args JSON file, \
                                or the arguments as JSON on standard input"
                        .into());
                }
                let mut text = Vec::new();
                stdin
                    .read_to_end(&mut text)
                    .map_err(|e| format!("cannot read the module arguments from stdin: {e}"))?;
                (text, "standard input".to_owned())
            }
        };
        serde_json::from_slice(&text)
            .map_err(|e| format!("the module arguments in {origin} are not valid JSON: {e}"))
    }
}

/// The entry point of every module binary: never returns, never panics,
/// prints one JSON object.
pub fn main<M: Module>() -> ! {
    let reply = match ArgsSource::from_args(std::env::args_os()) {
        Ok(source) => execute::<M>(&source),
        Err(msg) => failed(&msg),
    };
    let failed = reply.result.get("failed") == Some(&Value::Bool(true));
    let mut stdout = std::io::stdout().lock();
    // One write: stdout is line-buffered and the JSON has no newline, so
    // writing it piecewise made a syscall per kilobyte of a large result.
    let mut text = reply.to_json();
    text.push(b'\n');
    // Nothing useful can be done if stdout is gone; the exit code says it.
    let written = text.len() > 1 && stdout.write_all(&text).is_ok() && stdout.flush().is_ok();
    std::process::exit(if failed || !written { 1 } else { 0 })
}

/// A module's result: its keys, and its facts as serialized JSON.
#[derive(Debug)]
pub(crate) struct Reply {
    pub result: Map<String, Value>,
    pub facts: Option<Box<RawValue>>,
}

#[derive(Serialize)]
struct Emitted<'a> {
    #[serde(flatten)]
    result: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ansible_facts: Option<&'a RawValue>,
}

impl Reply {
    /// The JSON Ansible reads.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&Emitted {
            result: &self.result,
            ansible_facts: self.facts.as_deref(),
        })
        .unwrap_or_default()
    }

    /// The same as one value (for tests).
    pub(crate) fn into_value(self) -> Value {
        serde_json::from_slice(&self.to_json()).unwrap_or(Value::Null)
    }
}

/// Read the arguments from `source` and run the module.
pub(crate) fn execute<M: Module>(source: &ArgsSource) -> Reply {
    match source.read() {
        Ok(raw) => run_guarded_reply::<M>(raw),
        Err(msg) => failed(&msg),
    }
}

thread_local! {
    /// Set while this thread runs a module under [`run_guarded`].
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// Where the last guarded panic on this thread happened.
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

static PANIC_HOOK: Once = Once::new();

/// The hook is process-wide, so it is installed once and decides per thread:
/// a panic inside a guarded module keeps its location for the result (the
/// user sees it in `msg`), any other panic goes to the previous hook.
/// Swapping hooks per call would race between threads running modules.
fn install_panic_hook() {
    PANIC_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                PANIC_LOCATION.with(|slot| *slot.borrow_mut() = Some(location));
            } else {
                previous(info);
            }
        }));
    });
}

/// Run the module on already-read arguments, turning a panic into a failed
/// result: the result as one JSON value.
pub fn run_guarded<M: Module>(raw: Value) -> Value {
    run_guarded_reply::<M>(raw).into_value()
}

/// [`run_guarded`], the result as the module prints it.
pub(crate) fn run_guarded_reply<M: Module>(raw: Value) -> Reply {
    install_panic_hook();
    let was_guarded = GUARDED.with(|g| g.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| run_module::<M>(raw)));
    GUARDED.with(|g| g.set(was_guarded));
    result.unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let location = PANIC_LOCATION
            .with(|slot| slot.borrow_mut().take())
            .unwrap_or_default();
        failed(&format!(
            "internal error in {}: {what} (at {location}); this is a bug in ops, please report it",
            M::SPEC.module
        ))
    })
}

fn run_module<M: Module>(raw: Value) -> Reply {
    let (options, mut context) = match args::parse(&M::SPEC, raw) {
        Ok(parsed) => parsed,
        Err(e) => return failed(&e.to_string()),
    };
    let options: M::Options = match serde_json::from_value(Value::Object(options)) {
        Ok(options) => options,
        Err(e) => {
            return failed(&format!(
                "internal error: the options of {} do not match its argument spec: {e}",
                M::SPEC.module
            ))
        }
    };
    let outcome = M::run(options, &mut context);
    render(outcome, &context)
}

fn failed(msg: &str) -> Reply {
    let mut result = Map::new();
    result.insert("failed".into(), Value::Bool(true));
    result.insert("changed".into(), Value::Bool(false));
    result.insert("msg".into(), Value::from(msg));
    result.insert("warnings".into(), Value::Array(Vec::new()));
    Reply {
        result,
        facts: None,
    }
}

fn render(outcome: Result<Outcome, Failure>, context: &Context) -> Reply {
    let mut result = Map::new();
    let mut facts = None;
    match outcome {
        Ok(outcome) => {
            result.insert("changed".into(), Value::Bool(outcome.changed));
            if outcome.skipped {
                result.insert("skipped".into(), Value::Bool(true));
            }
            result.insert("msg".into(), Value::from(outcome.msg));
            result.extend(outcome.values);
            if context.diff {
                if let Some(diff) = outcome.diff {
                    result.insert("diff".into(), diff);
                }
            }
            facts = outcome.facts;
        }
        Err(failure) => {
            result.insert("failed".into(), Value::Bool(true));
            result.insert("changed".into(), Value::Bool(failure.changed));
            result.insert("msg".into(), Value::from(failure.msg));
            result.extend(failure.values);
        }
    }
    result.insert(
        "warnings".into(),
        Value::Array(context.warnings.iter().cloned().map(Value::from).collect()),
    );
    Reply { result, facts }
}
