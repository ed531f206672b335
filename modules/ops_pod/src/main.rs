//! The `ops_pod` Ansible module binary; the work is in `ops_core`.
//!
//! `ops_pod --validate BUNDLE` checks a bundle on any machine. Copied into
//! the store as `ops-wake`, the same binary is the waker of idle pods:
//! their sockets' service runs it with `--wake`.

fn main() {
    // Ansible passes the arguments file's path; a flag (`--validate`,
    // `--wake`, or an operator's `--help` or typo) is a command line.
    let flag = std::env::args_os()
        .nth(1)
        .is_some_and(|a| a.to_string_lossy().starts_with('-'));
    if flag {
        ops_core::modules::pod::command_main(std::env::args_os());
    }
    ops_core::ansible::main::<ops_core::modules::pod::OpsPod>()
}
