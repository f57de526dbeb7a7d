//! The krew manifest renders (as krew-release-bot would) into a valid
//! Plugin whose binary is the one this crate builds.

#[test]
fn krew_manifest_renders_to_a_plugin() {
    let template = include_str!("../krew/sessions.yaml");
    // What the bot does: the tag, and each addURIAndSha into uri + sha256.
    let rendered: String = template
        .lines()
        .map(|l| {
            let l = l.replace("{{ .TagName }}", "v0.1.0");
            match l.find("{{addURIAndSha \"") {
                Some(at) => {
                    let indent = &l[..at];
                    let uri = l[at + 16..]
                        .split('"')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    format!("{indent}uri: {uri}\n{indent}sha256: {}\n", "0".repeat(64))
                }
                None => format!("{l}\n"),
            }
        })
        .collect();
    let v: serde_yaml::Value = serde_yaml::from_str(&rendered).expect("valid YAML once rendered");
    assert_eq!(v["kind"], "Plugin");
    assert_eq!(
        v["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    // kubectl sessions ... => plugin name "sessions", binary kubectl-sessions.
    assert_eq!(v["metadata"]["name"], "sessions");
    assert_eq!(v["spec"]["version"], "v0.1.0");
    let platforms = v["spec"]["platforms"].as_sequence().unwrap();
    assert!(platforms.len() >= 2);
    for p in platforms {
        assert_eq!(p["bin"], "kubectl-sessions");
        assert!(p["uri"].as_str().unwrap().ends_with(".tar.gz"));
        assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
        assert!(p["selector"]["matchLabels"]["os"].is_string());
    }
    // The binary name matches the crate's [[bin]].
    let cargo = include_str!("../Cargo.toml");
    assert!(cargo.contains("name = \"kubectl-sessions\""));
}
