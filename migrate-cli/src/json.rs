//! What `--json` prints: one JSON value per command (newline-delimited
//! values for `status --follow`), ids as the same 16 hex digits as in the
//! text output (a JSON number above 2^53 loses digits in JavaScript and
//! jq). The schemas, per command:
//!
//! - `migrate PID --to HOST`: the migration's record ([`record_json`]);
//! - `check`: `{"pid", "movable": true, "summary"}`;
//! - `list`: `{"processes": [{"pid", "comm", "uid", "rss_kib", "lineage"}]}`;
//! - `list --history`: `{"migrations": [record, ...]}`, oldest first;
//! - `status [ID]`: the record; with `--follow`, one record per change;
//! - `report ID` without `-o`: `{"migrations": [record, ...]}` (the one
//!   asked, then those of `--compare`); with `-o`: `{"written": PATH}`;
//! - `resolve ID`: `{"id", "resolved"}`;
//! - a refusal (exit 1): `{"refused": [{"code", "text"}], "detail": [...]}`;
//!   any other error: `{"error": TEXT, "exit": STATUS}`.

use migrate_proto::record::MigrationRecord;
use serde_json::{json, Value};

/// A migration id as every output writes it: 16 hex digits.
pub fn id_text(id: u64) -> String {
    format!("{id:016x}")
}

/// A migration's record, its id as text.
pub fn record_json(r: &MigrationRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    v["id"] = Value::String(id_text(r.id));
    v
}

/// An error that is not a refusal.
pub fn error_json(text: &str, exit: u8) -> Value {
    json!({ "error": text, "exit": exit })
}

/// Prints `v` on standard output, on one line.
pub fn print(v: &Value) {
    println!("{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_text_of_sixteen_hex_digits() {
        let r = MigrationRecord {
            id: 0x0f73_0d54_116c_b23d,
            ..Default::default()
        };
        let v = record_json(&r);
        assert_eq!(v["id"], "0f730d54116cb23d");
        // Above 2^53: a number would have lost digits.
        let r = MigrationRecord {
            id: u64::MAX - 1,
            ..Default::default()
        };
        assert_eq!(record_json(&r)["id"], "fffffffffffffffe");
    }
}
