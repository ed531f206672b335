//! The `ops_release` Ansible module binary; the work is in `ops_core`.

fn main() {
    ops_core::ansible::main::<ops_core::modules::release::OpsRelease>()
}
