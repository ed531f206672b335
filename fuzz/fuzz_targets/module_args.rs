//! Fuzz target: ops_core::fuzzing::module_args (see library/src/fuzzing.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(init: ops_fuzz::init(), |data: &[u8]| {
    ops_core::fuzzing::module_args(data);
});
