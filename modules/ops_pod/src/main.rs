//! The `ops_pod` Ansible module binary; the work is in `ops_core`.
//!
//! Copied into the store as `ops-wake`, the same binary is the waker of
//! idle pods: their sockets' service runs it with `--wake`.

fn main() {
    // Ansible passes the arguments file's path; a flag (`--wake`, or an
    // operator's `--help` or typo) is for the waker, which says its usage.
    let flag = std::env::args_os()
        .nth(1)
        .is_some_and(|a| a.to_string_lossy().starts_with('-'));
    if flag {
        ops_core::modules::pod::wake_main(std::env::args_os());
    }
    ops_core::ansible::main::<ops_core::modules::pod::OpsPod>()
}
