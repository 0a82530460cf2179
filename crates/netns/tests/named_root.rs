//! Named namespaces and processes spawned into them, as root.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

fn prerequisites() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: this test needs root");
    }
    eprintln!("SKIP: needs root");
    false
}

#[test]
fn create_spawn_into_and_delete() {
    if !prerequisites() {
        return;
    }
    let name = format!("ovnkt-{}-named", std::process::id());
    let _ = ovnk_netns::delete_named(&name);
    let ns = ovnk_netns::create_named(&name).expect("create");
    assert!(ovnk_netns::create_named(&name).is_err(), "created twice");
    assert!(ovnk_netns::list_named("ovnkt-").contains(&name));

    // `ip netns` sees it too: the layout is compatible.
    let listed = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&name));

    // A process spawned into it is in that namespace and sees only its devices in /sys.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "stat -L -c %i /proc/self/ns/net; ls /sys/class/net"]);
    ns.command_in(&mut cmd).unwrap();
    let out = cmd.output().expect("spawn in netns");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let inode: u64 = lines.next().unwrap().trim().parse().unwrap();
    let want = std::fs::metadata(ns.path()).unwrap().ino();
    assert_eq!(inode, want, "child is not in the namespace");
    let devices: Vec<&str> = lines.collect();
    assert_eq!(devices, vec!["lo"], "sysfs of the namespace");

    // The host's /sys is untouched by the child's remount.
    let host_devs = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert!(host_devs >= 1);

    // run() executes code inside it.
    let inside = ns
        .run(|| std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino())
        .unwrap();
    assert_eq!(inside, want);

    drop(ns);
    ovnk_netns::delete_named(&name).expect("delete");
    assert!(!ovnk_netns::list_named("ovnkt-").contains(&name));
    ovnk_netns::delete_named(&name).expect("delete twice");
}
