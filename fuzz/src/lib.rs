//! ferry's parsers compiled alone for fuzzing: ferry's own source files, by path,
//! in a module tree shaped like ferry's so their `crate::` and `super::` paths
//! resolve. The targets (`fuzz_targets/`) call `hostile`, the properties ferry's
//! tests also replay.

#![allow(dead_code, unused_imports)]

#[path = "../../src/calendar.rs"]
pub mod calendar;
#[path = "../../src/exchange.rs"]
pub mod exchange;
#[path = "../../src/formula_guard.rs"]
pub mod formula_guard;
#[path = "../../src/hostile.rs"]
pub mod hostile;

#[path = "../../src/api"]
pub mod api {
    pub mod page_token;
}

#[path = "../../src/import"]
pub mod import {
    pub mod headers;
    pub mod json_object;
    pub mod layout;
    pub mod preflight;
    pub mod row;
    pub mod table;
    pub mod tax_id;
}

#[path = "../../src/storage"]
pub mod storage {
    pub mod key;
    pub mod signing;
}
