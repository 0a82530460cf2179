//! `ovsdb-codegen <schema.ovsschema> <out.rs>`: writes the typed models of one database.
//! `ovsdb-codegen --check <schema> <out.rs>` fails when `out.rs` is not what would be written.

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (check, rest) = match args.first().map(String::as_str) {
        Some("--check") => (true, &args[1..]),
        _ => (false, &args[..]),
    };
    let [schema_path, out_path] = rest else {
        bail!("usage: ovsdb-codegen [--check] <schema.ovsschema> <out.rs>");
    };
    let schema = ovsdb::DatabaseSchema::from_file(schema_path)
        .with_context(|| format!("reading schema {schema_path}"))?;
    // The path as given goes into the header, so run this from the workspace root.
    let code = ovsdb_codegen::generate(&schema, schema_path);
    if check {
        let current =
            std::fs::read_to_string(out_path).with_context(|| format!("reading {out_path}"))?;
        if current != code {
            bail!("{out_path} is out of date with {schema_path}; regenerate it");
        }
        println!("{out_path} is up to date");
    } else {
        std::fs::write(out_path, code).with_context(|| format!("writing {out_path}"))?;
        println!("wrote {out_path} ({} {})", schema.name, schema.version);
    }
    Ok(())
}
