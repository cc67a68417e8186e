//! Docker tasks: the `docker run` command line, the engine reachability check, and stopping and
//! removing containers. The Docker CLI is the task's process; its output goes to the sandbox.

use pacer_core::cluster::{CommandSpec, DockerSpec, LaunchSpec, NetworkSpec};
use pacer_core::id::TaskId;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// Where the sandbox appears inside a container, as with Mesos.
pub(crate) const CONTAINER_SANDBOX: &str = "/mnt/mesos/sandbox";
/// How long a `docker info` answer is trusted.
const PROBE_TTL: Duration = Duration::from_secs(10);
/// How long `docker info` may take before the engine counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for `docker rm -f`.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(60);

/// A container name from a task id: Docker allows `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(crate) fn container_name(task: &TaskId) -> String {
    let mut name: String = task
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert_str(0, "pacer-");
    }
    name
}

/// The arguments after the `docker` binary for running `spec` in a container named `name`.
pub(crate) fn run_args(
    spec: &LaunchSpec,
    docker: &DockerSpec,
    name: &str,
    sandbox: &Path,
) -> Vec<String> {
    // `--init`: a process running as PID 1 ignores SIGTERM unless it installs a handler, so
    // without an init every kill of a container would wait out the whole grace period.
    let mut a: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--init".into(),
        "--name".into(),
        name.into(),
    ];
    if docker.network != NetworkSpec::Host {
        for pm in &docker.port_mappings {
            let Some(host) = pm.host_port else { continue };
            for proto in protocols(&pm.protocol) {
                a.push("-p".into());
                a.push(format!("{host}:{}/{proto}", pm.container_port));
            }
        }
    }
    for (k, v) in &spec.env {
        a.push("-e".into());
        a.push(format!("{k}={v}"));
    }
    a.push("-e".into());
    a.push(format!("MESOS_SANDBOX={CONTAINER_SANDBOX}"));
    a.push("-v".into());
    a.push(format!("{}:{CONTAINER_SANDBOX}", sandbox.display()));
    if docker.privileged {
        a.push("--privileged".into());
    }
    if docker.force_pull {
        a.push("--pull".into());
        a.push("always".into());
    }
    for v in &docker.volumes {
        // Relative host paths live in the sandbox, as Mesos resolves them.
        let host = Path::new(&v.host_path);
        let host = if host.is_absolute() {
            host.to_path_buf()
        } else {
            sandbox.join(host)
        };
        a.push("-v".into());
        let ro = if v.read_only { ":ro" } else { "" };
        a.push(format!("{}:{}{ro}", host.display(), v.container_path));
    }
    match &docker.network {
        NetworkSpec::Host => a.extend(["--network".into(), "host".into()]),
        NetworkSpec::Bridge => a.extend(["--network".into(), "bridge".into()]),
        NetworkSpec::Container(Some(net)) => a.extend(["--network".into(), net.clone()]),
        NetworkSpec::Container(None) => {}
    }
    for (k, v) in &docker.parameters {
        a.push(if k.starts_with('-') {
            k.clone()
        } else {
            format!("--{k}")
        });
        a.push(v.clone());
    }
    a.push("--label".into());
    a.push(format!("MESOS_TASK_ID={}", spec.task_id));
    // A shell command replaces the image's entrypoint with /bin/sh, as Mesos does, so that
    // images with an ENTRYPOINT still run the command itself.
    if let CommandSpec::Shell(_) = spec.command {
        a.extend(["--entrypoint".into(), "/bin/sh".into()]);
    }
    a.push(docker.image.clone());
    match &spec.command {
        CommandSpec::Shell(cmd) => a.extend(["-c".into(), cmd.clone()]),
        CommandSpec::Args(args) => a.extend(args.iter().cloned()),
        CommandSpec::ImageDefault => {}
    }
    a
}

fn protocols(spec: &str) -> Vec<String> {
    let list: Vec<String> = spec
        .split(',')
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect();
    if list.is_empty() {
        vec!["tcp".into()]
    } else {
        list
    }
}

/// Checks that a Docker engine answers, remembering the answer for a few seconds so that a burst
/// of launches costs one `docker info`.
pub(crate) struct DockerProbe {
    bin: PathBuf,
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl DockerProbe {
    pub fn new(bin: PathBuf) -> Self {
        DockerProbe {
            bin,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// `Ok` if the engine answered recently; else why not (the first line of the CLI's error).
    pub async fn reachable(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < PROBE_TTL {
                return answer.clone();
            }
        }
        let answer = self.ask().await;
        if let Err(why) = &answer {
            tracing::warn!(docker = %self.bin.display(), reason = %why, "Docker engine not reachable");
        }
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    async fn ask(&self) -> Result<(), String> {
        let run = Command::new(&self.bin)
            .arg("info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(PROBE_TIMEOUT, run).await {
            Err(_) => {
                return Err(format!(
                    "`{} info` did not answer within {PROBE_TIMEOUT:?}",
                    self.bin.display()
                ))
            }
            Ok(Err(e)) => return Err(format!("cannot run {}: {e}", self.bin.display())),
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        match stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(line) => Err(line.to_string()),
            None => Err(format!(
                "`{} info` failed ({})",
                self.bin.display(),
                out.status
            )),
        }
    }
}

/// `docker stop -t <grace> <name>` in the background; the caller keeps its own SIGKILL deadline.
pub(crate) fn stop(bin: &Path, name: &str, grace: Duration) {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    let args = vec![
        "stop".to_string(),
        "-t".into(),
        secs.to_string(),
        name.to_string(),
    ];
    background(bin, args, grace + REMOVE_TIMEOUT);
}

/// A shell command line that runs `cmd` inside the container (for command health checks).
pub(crate) fn exec_shell(bin: &Path, name: &str, cmd: &str) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    format!(
        "exec {} exec {} /bin/sh -c {}",
        quote(&bin.to_string_lossy()),
        quote(name),
        quote(cmd)
    )
}

/// `docker rm -f <name>` in the background, so that no container outlives its task.
pub(crate) fn remove(bin: &Path, name: &str) {
    background(
        bin,
        vec!["rm".into(), "-f".into(), name.to_string()],
        REMOVE_TIMEOUT,
    );
}

fn background(bin: &Path, args: Vec<String>, limit: Duration) {
    let bin = bin.to_path_buf();
    tokio::spawn(async move {
        let run = Command::new(&bin)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(limit, run).await {
            Ok(Ok(out)) if out.status.success() => {}
            Ok(Ok(out)) => {
                let err = String::from_utf8_lossy(&out.stderr);
                // A container that is already gone is what we wanted.
                if !err.contains("No such container") {
                    tracing::debug!(command = ?args, stderr = %err.trim(), "docker command failed");
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(docker = %bin.display(), command = ?args, error = %e, "cannot run docker")
            }
            Err(_) => tracing::warn!(command = ?args, "docker command timed out"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacer_core::cluster::{AgentId, OfferId, PortMappingSpec, VolumeSpec};
    use pacer_core::id::{InstanceId, PathId};
    use std::collections::BTreeMap;

    fn spec(command: CommandSpec, docker: DockerSpec) -> LaunchSpec {
        let app = PathId::resolve("/web", &PathId::root()).unwrap();
        let inst = InstanceId::new(&app, "u1");
        LaunchSpec {
            task_id: TaskId::new(&inst, 1),
            instance_id: inst,
            app_id: app,
            offer_id: OfferId("o".into()),
            agent_id: AgentId("a".into()),
            hostname: "h".into(),
            command,
            user: None,
            env: BTreeMap::from([("PORT0".to_string(), "31001".to_string())]),
            cpus: 0.1,
            mem_mb: 32.0,
            disk_mb: 0.0,
            host_ports: vec![31001],
            docker: Some(docker.clone()),
            kill_grace: None,
            fetch: vec![],
            health_checks: vec![],
            resource_roles: vec![],
            labels: Default::default(),
        }
    }

    fn docker() -> DockerSpec {
        DockerSpec {
            image: "nginx:1".into(),
            force_pull: true,
            privileged: true,
            parameters: vec![("memory-swap".into(), "64m".into())],
            network: NetworkSpec::Bridge,
            port_mappings: vec![
                PortMappingSpec {
                    container_port: 80,
                    host_port: Some(31001),
                    protocol: "tcp,udp".into(),
                },
                PortMappingSpec {
                    container_port: 81,
                    host_port: None,
                    protocol: "tcp".into(),
                },
            ],
            volumes: vec![
                VolumeSpec {
                    container_path: "/data".into(),
                    host_path: "/srv/data".into(),
                    read_only: true,
                },
                VolumeSpec {
                    container_path: "/cache".into(),
                    host_path: "cache".into(),
                    read_only: false,
                },
            ],
        }
    }

    #[test]
    fn builds_a_full_run_command() {
        let s = spec(
            CommandSpec::Shell("nginx -g 'daemon off;'".into()),
            docker(),
        );
        let args = run_args(&s, s.docker.as_ref().unwrap(), "web.x", Path::new("/sb"));
        let line = args.join(" ");
        let expected = "run --rm --init --name web.x -p 31001:80/tcp -p 31001:80/udp -e PORT0=31001 \
            -e MESOS_SANDBOX=/mnt/mesos/sandbox -v /sb:/mnt/mesos/sandbox --privileged --pull always \
            -v /srv/data:/data:ro -v /sb/cache:/cache --network bridge --memory-swap 64m \
            --label MESOS_TASK_ID=web.instance-u1._app.1 --entrypoint /bin/sh nginx:1 -c nginx -g 'daemon off;'";
        assert_eq!(line, expected);
        assert_eq!(
            args.last().unwrap(),
            "nginx -g 'daemon off;'",
            "the shell command stays one argument"
        );
    }

    #[test]
    fn args_and_image_default_and_host_network() {
        let mut d = docker();
        d.network = NetworkSpec::Host;
        d.force_pull = false;
        d.privileged = false;
        let s = spec(
            CommandSpec::Args(vec!["serve".into(), "--port=1".into()]),
            d.clone(),
        );
        let args = run_args(&s, &d, "n", Path::new("/sb"));
        assert!(
            !args.contains(&"-p".to_string()),
            "no port publishing on the host network"
        );
        assert!(!args.contains(&"--entrypoint".to_string()));
        assert_eq!(args[args.len() - 3..], ["nginx:1", "serve", "--port=1"]);
        let s = spec(CommandSpec::ImageDefault, d.clone());
        assert_eq!(
            run_args(&s, &d, "n", Path::new("/sb")).last().unwrap(),
            "nginx:1"
        );
    }

    #[test]
    fn container_names_are_valid() {
        assert_eq!(container_name(&TaskId::from_raw("a.b_c-1")), "a.b_c-1");
        assert_eq!(container_name(&TaskId::from_raw("_x/y z")), "pacer-_x_y_z");
    }
}
