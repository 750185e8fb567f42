//! `enforcer policy check` through the real binary: exit codes and error locations.

use std::process::Command;

fn check(files: &[&std::path::Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_enforcer"))
        .args(["policy", "check"])
        .args(files)
        .output()
        .expect("run enforcer")
}

#[test]
fn valid_files_exit_zero_and_errors_name_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "kind: NetworkPolicy\nname: web\nsubject: app=web\negress:\n  - to: app=db\n    ports: [\"tcp/5432\"]\n\
         ---\nkind: FilePolicy\nname: web-files\nsubject: app=web\nrules:\n  - paths: [/etc/ssl/]\n",
    )
    .expect("write");
    let out = check(&[&good]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok: 2 policies (1 network, 1 file) in 1 files");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: NetworkPolicy\nname: db\nsubject: app=db\negress:\n  - to: app=web\n    ports: [\"tcp/99999\"]\n",
    )
    .expect("write");
    let out = check(&[&good, &bad]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr.contains(&format!("{}:6:", bad.display())), "{stderr}");
    assert!(stderr.contains("egress[0].ports[0]"), "{stderr}");
}
