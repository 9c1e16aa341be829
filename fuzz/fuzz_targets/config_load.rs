//! `config_load`: arbitrary UTF-8 text fed to `Config::parse`.
//!
//! The configuration is operator input read at start-up and again on every
//! SIGHUP reload, under live traffic: a malformed file must come back as a
//! `ConfigError` with a readable message, never as a panic that takes the
//! running proxy down. So every input must give `Ok` or `Err`, and an `Err`
//! must also format (its message quotes spans of the source, which is where
//! slicing bugs would hide).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = baton::Config::parse(text, "fuzz.toml", None) {
        let _ = e.to_string();
    }
});
