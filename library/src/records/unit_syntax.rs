//! What a systemd unit file and a service's environment can carry exactly:
//! the rules bundles are validated against before any unit is written.

/// Longest `NAME=value` Linux hands to a program: one string of the
/// environment block, NUL included, may be 32 pages (MAX_ARG_STRLEN);
/// systemd refuses to start a service with a longer one.
pub(crate) const MAX_ASSIGNMENT: usize = 32 * 4096 - 1;

/// Whether variable `name` can carry `value` to a service exactly. The
/// message never quotes the value: it may be a secret.
pub fn check_env_value(name: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        return Err(
            "the value contains a NUL character, which no environment variable can hold".into(),
        );
    }
    let length = name.len() + 1 + value.len();
    if length > MAX_ASSIGNMENT {
        return Err(format!(
            "the value is too long: {name}=value is {length} bytes, and Linux passes at most \
             {MAX_ASSIGNMENT} bytes in one environment variable"
        ));
    }
    Ok(())
}

/// Whether a path can be written into a path setting of a unit
/// (`RootDirectory=`, `EnvironmentFile=`, `ReadOnlyPaths=`, `BindPaths=`)
/// and reach systemd exactly. Those settings split at whitespace (and
/// `BindPaths=` at `:`) and treat quotes and backslashes each their own
/// way, and systemd ends lines at control characters, so a path with any
/// of these is refused; `%` is written `%%` (see `crate::units`). `$` is
/// refused too: the waker's `ExecStart=` carries the store's root and the
/// unit directory, and systemd expands `${X}` in its arguments (review18
/// F2) but not in the program's path, so no one escape (`$$`) fits both.
pub fn check_unit_path(path: &str) -> Result<(), String> {
    match path.chars().find(|c| {
        c.is_ascii_control()
            || c.is_ascii_whitespace()
            || matches!(c, '"' | '\'' | '\\' | ':' | '$')
    }) {
        Some(c) => Err(format!(
            "it contains {c:?}; systemd unit files cannot carry whitespace, control characters, \
             quotes, '\\', ':' or '$' in a path"
        )),
        None => Ok(()),
    }
}
