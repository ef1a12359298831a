//! The kernel's layers: what holds even for code that gets past the interpreter (crafted
//! bytecode, a native module). Each returns the name it is logged under, or an error when the
//! kernel refused it; the caller decides which are required.
#![allow(unsafe_code, reason = "namespaces, credentials and rlimits have no safe wrapper in std")]

use std::{collections::BTreeMap, path::PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, RestrictionStatus, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

use crate::{Error, Result};

/// The user connectors run as when the node runs as root and gives them no user of their own.
const NOBODY: libc::uid_t = 65534;
const NOGROUP: libc::gid_t = 65534;
/// Descriptors a connector may hold: its pipes, stdio, and what imports open for a moment.
const MAX_OPEN_FILES: u64 = 64;

/// A network namespace of its own: no interface but its own loopback. As root a plain one; else
/// inside a new user namespace, where the kernel allows it.
pub(crate) fn isolate_network() -> Result<&'static str> {
    // SAFETY: unshare only changes this (still single-threaded) process's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
        return Ok("network namespace");
    }
    // SAFETY: as above.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } == 0 {
        return Ok("user and network namespaces");
    }
    Err(os_error("unshare"))
}

/// As root: become `uid` (its own group too; `nobody` without one), with no supplementary
/// groups and so no capabilities. A user of its own keeps a connector apart from every other
/// app's: no signals, no `/proc` access, no shared per-user limits or priorities.
pub(crate) fn drop_root(uid: Option<libc::uid_t>) -> Result<Option<String>> {
    if uid == Some(0) {
        return Err(Error::Sandbox("a connector never runs as root".into()));
    }
    let (user, group) = uid.map_or((NOBODY, NOGROUP), |uid| (uid, uid));
    // SAFETY: plain credential calls on this process.
    unsafe {
        if libc::geteuid() != 0 {
            return Ok(None);
        }
        let parent = libc::getppid();
        if libc::setgroups(0, std::ptr::null()) != 0 {
            return Err(os_error("setgroups"));
        }
        if libc::setresgid(group, group, group) != 0 {
            return Err(os_error("setresgid"));
        }
        if libc::setresuid(user, user, user) != 0 {
            return Err(os_error("setresuid"));
        }
        // A change of credentials clears the parent-death signal the node set: set it again,
        // and leave if the node is already gone.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(os_error("prctl(PR_SET_PDEATHSIG)"));
        }
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(Some(match uid {
        Some(uid) => format!("user {uid} of its own"),
        None => "user nobody".to_owned(),
    }))
}

/// Limits no connector needs beyond: no core dumps, no file growth (memfd or tmpfs included), a
/// few descriptors; no reading of this process by others of its user (`/proc/<pid>/mem`).
pub(crate) fn limit_resources() -> Result<&'static str> {
    set_limit(libc::RLIMIT_CORE, 0)?;
    set_limit(libc::RLIMIT_FSIZE, 0)?;
    // A write beyond the size limit then fails with EFBIG instead of killing the process (as
    // when stderr is a regular file, which the embedded interpreter does not arrange for).
    // SAFETY: installs SIG_IGN, no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    set_limit(libc::RLIMIT_NOFILE, MAX_OPEN_FILES)?;
    // SAFETY: prctl with plain integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) } != 0 {
        return Err(os_error("prctl(PR_SET_DUMPABLE)"));
    }
    Ok("rlimits")
}

/// The app's memory: its data segment (heap, anonymous mappings, thread stacks), soft and hard,
/// so it cannot be raised again.
pub(crate) fn limit_memory(bytes: u64) -> Result<()> {
    set_limit(libc::RLIMIT_DATA, bytes)
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> Result<()> {
    let limit = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(os_error("setrlimit"));
    }
    Ok(())
}

/// Landlock: the file system read-only beneath `read_roots` and nothing else; no TCP; no
/// signals or abstract sockets outside this process. Applies to this thread and the threads it
/// starts afterwards, so it runs before any thread is started.
pub(crate) fn restrict_files(read_roots: &[PathBuf]) -> Result<String> {
    let abi = ABI::V6;
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .and_then(|ruleset| ruleset.handle_access(AccessNet::from_all(abi)))
        .and_then(|ruleset| ruleset.scope(Scope::from_all(abi)))
        .and_then(|ruleset| ruleset.create())
        .and_then(|ruleset| {
            ruleset.add_rules(path_beneath_rules(read_roots, AccessFs::from_read(abi)))
        })
        .and_then(|ruleset| ruleset.restrict_self())
        .map_err(|error| Error::Sandbox(format!("landlock: {error}")))?;
    let RestrictionStatus { ruleset, .. } = status;
    match ruleset {
        RulesetStatus::FullyEnforced => Ok("landlock".into()),
        RulesetStatus::PartiallyEnforced => Ok("landlock (partly: an older kernel)".into()),
        RulesetStatus::NotEnforced => {
            Err(Error::Sandbox("landlock is not enabled in this kernel".into()))
        }
    }
}

/// Seccomp: system calls no connector makes. New processes and threads (the connector's own
/// threads already run), credentials, sockets, other processes' memory, signals and scheduling, kernel
/// facilities that bypass these filters (io_uring) or enlarge the attack surface (bpf, perf).
/// A refused call fails with EPERM (the interpreter raises `PermissionError`). Applies to every
/// thread of the process.
pub(crate) fn filter_system_calls() -> Result<&'static str> {
    // SAFETY: getpid has no preconditions.
    let own_pid = u64::try_from(unsafe { libc::getpid() }).unwrap_or(0);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let always = [
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_tkill,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_send_signal,
        libc::SYS_pidfd_getfd,
        libc::SYS_kcmp,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_mknod,
        libc::SYS_mknodat,
        libc::SYS_shmget,
        libc::SYS_shmat,
        libc::SYS_msgget,
        libc::SYS_semget,
        libc::SYS_memfd_create,
        libc::SYS_memfd_secret,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_migrate_pages,
        libc::SYS_move_pages,
        libc::SYS_ioprio_set,
        // Credentials: a connector never changes who it runs as.
        libc::SYS_setuid,
        libc::SYS_setgid,
        libc::SYS_setreuid,
        libc::SYS_setregid,
        libc::SYS_setresuid,
        libc::SYS_setresgid,
        libc::SYS_setfsuid,
        libc::SYS_setfsgid,
        libc::SYS_setgroups,
        libc::SYS_capset,
        // Files' modes, owners, times, sizes and attributes: landlock does not cover them all
        // (chmod, chown, xattrs at any ABI; truncate below ABI 3), and a connector sharing the
        // node's user could otherwise open an app environment it reads back up for writing.
        libc::SYS_chmod,
        libc::SYS_fchmod,
        libc::SYS_fchmodat,
        452, // fchmodat2 (Linux 6.6; not in libc 0.2's table for every target)
        libc::SYS_chown,
        libc::SYS_fchown,
        libc::SYS_lchown,
        libc::SYS_fchownat,
        libc::SYS_truncate,
        libc::SYS_ftruncate,
        libc::SYS_utime,
        libc::SYS_utimes,
        libc::SYS_utimensat,
        libc::SYS_futimesat,
        libc::SYS_setxattr,
        libc::SYS_lsetxattr,
        libc::SYS_fsetxattr,
        libc::SYS_removexattr,
        libc::SYS_lremovexattr,
        libc::SYS_fremovexattr,
    ];
    for call in always {
        rules.insert(call, vec![]);
    }
    // Signals only to this process.
    for call in
        [libc::SYS_kill, libc::SYS_tgkill, libc::SYS_rt_sigqueueinfo, libc::SYS_rt_tgsigqueueinfo]
    {
        rules.insert(call, vec![rule(vec![condition(0, SeccompCmpOp::Ne, own_pid)?])?]);
    }
    // Priorities of this process only: `setpriority(PRIO_USER | PRIO_PGRP, ...)` would reach
    // other processes of the same user (rules of one call are alternatives: either refuses).
    rules.insert(
        libc::SYS_setpriority,
        vec![
            rule(vec![condition(0, SeccompCmpOp::Ne, libc::PRIO_PROCESS as u64)?])?,
            rule(vec![
                condition(1, SeccompCmpOp::Ne, 0)?,
                condition(1, SeccompCmpOp::Ne, own_pid)?,
            ])?,
        ],
    );
    // Limits and scheduling of this process only (0 means this process).
    for (call, pid_argument) in [
        (libc::SYS_prlimit64, 0),
        (libc::SYS_sched_setaffinity, 0),
        (libc::SYS_sched_setscheduler, 0),
        (libc::SYS_sched_setparam, 0),
        (libc::SYS_sched_setattr, 0),
    ] {
        rules.insert(
            call,
            vec![rule(vec![
                condition(pid_argument, SeccompCmpOp::Ne, 0)?,
                condition(pid_argument, SeccompCmpOp::Ne, own_pid)?,
            ])?],
        );
    }
    // Shared anonymous memory is not counted by the data limit.
    let shared_anonymous = (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64;
    rules.insert(
        libc::SYS_mmap,
        vec![rule(vec![
            SeccompCondition::new(
                3,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(shared_anonymous),
                shared_anonymous,
            )
            .map_err(seccomp_error)?,
        ])?],
    );
    let arch = std::env::consts::ARCH.try_into().map_err(seccomp_error)?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(seccomp_error)?;
    let program: seccompiler::BpfProgram = filter.try_into().map_err(seccomp_error)?;
    seccompiler::apply_filter_all_threads(&program).map_err(seccomp_error)?;
    Ok("seccomp")
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule> {
    SeccompRule::new(conditions).map_err(seccomp_error)
}

fn condition(argument: u8, operation: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(argument, SeccompCmpArgLen::Dword, operation, value)
        .map_err(seccomp_error)
}

fn seccomp_error(error: impl std::fmt::Display) -> Error {
    Error::Sandbox(format!("seccomp: {error}"))
}

fn os_error(call: &str) -> Error {
    Error::Sandbox(format!("{call}: {}", std::io::Error::last_os_error()))
}
