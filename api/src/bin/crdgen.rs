//! Prints the SessionReport CRD as the chart ships it; `make manifests` writes
//! it to `charts/sessionguard/crds/sessionreports.yaml`.

use std::io::Write;

fn main() -> anyhow::Result<()> {
    let yaml = sessionguard_api::crd_yaml()?;
    std::io::stdout().write_all(yaml.as_bytes())?;
    Ok(())
}
