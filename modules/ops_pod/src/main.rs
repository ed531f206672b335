//! The `ops_pod` Ansible module binary; the work is in `ops_core`.
//!
//! Copied into the store as `ops-wake`, the same binary is the waker of
//! idle pods: their sockets' service runs it with `--wake`.

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == "--wake") {
        ops_core::modules::pod::wake_main(std::env::args_os());
    }
    ops_core::ansible::main::<ops_core::modules::pod::OpsPod>()
}
