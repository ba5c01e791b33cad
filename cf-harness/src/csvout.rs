//! `--csv`: a report as a header line and one row, its JSON document
//! flattened (`kills.by_kind.member`), so runs can be appended and plotted.

use anyhow::Result;
use serde_json::Value;

/// The scalar leaves of `v`, with dotted paths, in document order. Arrays of
/// named objects (`invariants`) become `invariants.NAME.ok`; other arrays are
/// left out (they are in `--json`).
pub fn flatten(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                walk(&key(k), x, out);
            }
        }
        Value::Array(items) => {
            for x in items {
                if let (Some(name), Some(ok)) = (x["name"].as_str(), x.get("ok")) {
                    out.push((format!("{}.ok", key(name)), ok.to_string()));
                }
            }
        }
        Value::Null => out.push((prefix.to_string(), String::new())),
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// Write rows (each a flattened document with the same keys) as CSV.
pub fn to_csv(rows: &[Vec<(String, String)>]) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if let Some(first) = rows.first() {
        w.write_record(first.iter().map(|(k, _)| k.as_str()))?;
    }
    for r in rows {
        w.write_record(r.iter().map(|(_, v)| v.as_str()))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing CSV: {e}"))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Print `doc` flattened as a header and one row.
pub fn print_flat(doc: &Value) -> Result<()> {
    let text = to_csv(&[flatten(doc)])?;
    crate::out!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattened_in_order() {
        let v = serde_json::json!({"seed": 1, "kills": {"total": 2, "by_kind": {"member": 2}},
            "invariants": [{"name": "bank_total", "ok": true}], "plex": null, "s": "a,b"});
        let f = flatten(&v);
        let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "seed",
                "kills.total",
                "kills.by_kind.member",
                "invariants.bank_total.ok",
                "plex",
                "s"
            ]
        );
        let text = to_csv(&[f]).unwrap();
        assert!(text.contains("\"a,b\""), "{text}");
    }
}
