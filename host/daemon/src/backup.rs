//! `pacer backup FILE` and `pacer restore FILE`: the whole state of a store in one file, so it can
//! move between stores (the embedded one under `--data_dir`, or ZooKeeper with `--zk`). Run them
//! while no Pacer uses the store.
//!
//! The file is JSON lines: a header `{"pacer_backup":1,"records":N}`, then one
//! `{"key":…,"value":<base64>}` per record, in key order.

use anyhow::Context;
use base64::Engine as _;
use pacer_store::{Store, StoreOp};
use serde_json::{json, Value};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

const FORMAT: u64 = 1;
/// A restore writes in batches this large, well under ZooKeeper's request limit.
const BATCH_BYTES: usize = 400_000;
const BATCH_RECORDS: usize = 200;

pub fn backup(store: &dyn Store, file: &Path) -> anyhow::Result<usize> {
    let records = store.scan("").context("cannot read the store")?;
    let tmp = file.with_extension("partial");
    let mut out = BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    writeln!(
        out,
        "{}",
        json!({"pacer_backup": FORMAT, "records": records.len()})
    )?;
    let b64 = base64::engine::general_purpose::STANDARD;
    for (key, value) in &records {
        writeln!(out, "{}", json!({"key": key, "value": b64.encode(value)}))?;
    }
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .context("cannot write the backup")?;
    std::fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(records.len())
}

pub fn restore(store: &dyn Store, file: &Path) -> anyhow::Result<usize> {
    let reader = std::io::BufReader::new(
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
    );
    let mut lines = reader.lines();
    let header: Value = serde_json::from_str(&lines.next().context("the backup is empty")??)
        .context("the backup's first line is not a Pacer backup header")?;
    anyhow::ensure!(
        header["pacer_backup"] == FORMAT,
        "{} is not a Pacer backup (format {FORMAT})",
        file.display()
    );
    let expected = header["records"].as_u64().unwrap_or(0) as usize;
    // Restoring over live state would mix two histories.
    anyhow::ensure!(
        store
            .scan("")
            .context("cannot read the target store")?
            .is_empty(),
        "the target store ({}) is not empty; restore into a new --data_dir or --zk path",
        store.describe()
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let (mut batch, mut bytes, mut written) = (Vec::new(), 0, 0);
    for (n, line) in lines.enumerate() {
        let v: Value = serde_json::from_str(&line?)
            .with_context(|| format!("record {} of the backup is not JSON", n + 1))?;
        let key = v["key"]
            .as_str()
            .context("a record without a key")?
            .to_string();
        let value = b64
            .decode(v["value"].as_str().context("a record without a value")?)
            .with_context(|| format!("the value of {key} is not base64"))?;
        bytes += value.len() + key.len();
        batch.push(StoreOp::Put { key, value });
        if bytes >= BATCH_BYTES || batch.len() >= BATCH_RECORDS {
            written += batch.len();
            store
                .apply(&batch)
                .context("cannot write to the target store")?;
            batch.clear();
            bytes = 0;
        }
    }
    written += batch.len();
    store
        .apply(&batch)
        .context("cannot write to the target store")?;
    anyhow::ensure!(
        written == expected,
        "the backup announced {expected} records but held {written}; it may be truncated"
    );
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacer_store::MemStore;

    #[test]
    fn a_backup_restores_every_record_and_refuses_a_used_target() {
        let from = MemStore::default();
        let mut ops = vec![StoreOp::Put {
            key: "meta/bin".into(),
            value: (0..=255u8).collect(),
        }];
        for i in 0..450 {
            ops.push(StoreOp::Put {
                key: format!("app//a{i}"),
                value: vec![b'x'; 2000],
            });
        }
        from.apply(&ops).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.backup");
        assert_eq!(backup(&from, &file).unwrap(), 451);
        let to = MemStore::default();
        assert_eq!(restore(&to, &file).unwrap(), 451);
        assert_eq!(to.scan("").unwrap(), from.scan("").unwrap());
        let err = restore(&to, &file).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        // A truncated file is noticed.
        let text = std::fs::read_to_string(&file).unwrap();
        let cut: Vec<&str> = text.lines().take(100).collect();
        std::fs::write(&file, cut.join("\n")).unwrap();
        let err = restore(&MemStore::default(), &file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}
