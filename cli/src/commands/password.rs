//! Instance passwords sealed on the operator's machine: each is sealed to
//! the public key of every worker that uses the instance (fetched from the
//! coordinator, fingerprint shown) and only ciphertext is sent. Notes tell
//! the operator when a worker that uses an instance has no sealed copy.
use anyhow::{Result, bail};
use pgsnapman_proto::seal::{self, instance_arg};
use pgsnapman_proto::v1;
use zeroize::Zeroizing;

use crate::client::{Admin, rpc};

/// A worker the password was sealed to, for the operator's note.
pub struct SealedTo {
    pub worker: String,
    pub fingerprint: String,
}

/// Seals `password` to each of `workers` (ids or names). A worker that has
/// never connected has no key yet: a clear error naming it. With
/// `expect_fingerprint`, a key with another fingerprint is refused.
pub async fn seal_for(
    admin: &mut Admin,
    workers: &[v1::WorkerRef],
    password: &Zeroizing<String>,
    expect_fingerprint: Option<&str>,
) -> Result<(Vec<v1::SealedPassword>, Vec<SealedTo>)> {
    if expect_fingerprint.is_some() && workers.len() > 1 {
        bail!(
            "--worker-fingerprint names the key of one worker, but the password goes to {} \
             workers: seal it to each with `pgsnap instance set-password --worker`",
            workers.len()
        );
    }
    let mut sealed = Vec::with_capacity(workers.len());
    let mut to = Vec::with_capacity(workers.len());
    let mut done: Vec<i64> = Vec::with_capacity(workers.len());
    for r in workers {
        let w = rpc(admin.get_worker(r.clone()).await)?;
        if done.contains(&w.id) {
            continue;
        }
        done.push(w.id);
        let Some(key) = w.seal_key.as_ref().filter(|k| !k.public_key.is_empty()) else {
            bail!(
                "worker {} has not connected yet, so it has no seal key: start it, then set the \
                 password",
                w.name
            );
        };
        // The fingerprint is computed here, not taken from the coordinator.
        let fingerprint = seal::fingerprint(&key.public_key);
        if let Some(expected) = expect_fingerprint
            && expected != fingerprint
        {
            bail!(
                "worker {}'s seal key has fingerprint {fingerprint}, not {expected}: compare with \
                 `pgsnapman-worker identity` on the worker host before sending it a password",
                w.name
            );
        }
        let ciphertext = seal::seal(&key.public_key, password)
            .map_err(|e| anyhow::anyhow!("seal the password to worker {}: {e}", w.name))?;
        sealed.push(v1::SealedPassword {
            worker: Some(v1::WorkerRef {
                r#ref: Some(v1::worker_ref::Ref::Id(w.id)),
            }),
            ciphertext,
            key_fingerprint: fingerprint.clone(),
        });
        to.push(SealedTo {
            worker: w.name,
            fingerprint,
        });
    }
    Ok((sealed, to))
}

/// `password sealed to worker w1 (key 9f3a-…), w2 (key …)`.
pub fn sealed_note(to: &[SealedTo]) -> String {
    let list: Vec<String> = to
        .iter()
        .map(|t| format!("{} (key {})", t.worker, t.fingerprint))
        .collect();
    format!("password sealed to worker {}", list.join(", "))
}

/// A note on stderr (stdout stays one JSON document with --output json).
pub fn notice(text: &str) {
    eprintln!("pgsnap: note: {text}");
}

/// The lines telling the operator which workers that use `instance` cannot
/// open its password, and the command that fixes each.
pub fn missing_notes(instance: &v1::Instance) -> Vec<String> {
    let arg = instance_arg(instance.id, &instance.name);
    instance
        .passwords
        .iter()
        .filter_map(|p| {
            let why = match p.state() {
                v1::PasswordState::Missing => "has no password sealed to worker",
                v1::PasswordState::Stale => "has a password sealed to an old key of worker",
                _ => return None,
            };
            Some(format!(
                "instance {} {why} {}: run `pgsnap instance set-password {arg} --worker {}`",
                instance.name, p.worker_name, p.worker_name
            ))
        })
        .collect()
}

/// Prints `missing_notes` of instance `id` (after a change that may have
/// given it a new worker: a job, a restore target, a default worker).
pub async fn warn_missing(admin: &mut Admin, id: i64) -> Result<()> {
    let instance = rpc(admin.get_instance(v1::IdRequest { id }).await)?;
    for line in missing_notes(&instance) {
        notice(&line);
    }
    Ok(())
}

/// Like `warn_missing` for one worker that will connect to instance `id`
/// (an ad-hoc restore), which need not be among the instance's users.
pub async fn warn_missing_for(admin: &mut Admin, id: i64, worker_id: i64) -> Result<()> {
    let instance = rpc(admin.get_instance(v1::IdRequest { id }).await)?;
    if !instance.has_password {
        return Ok(());
    }
    let sealed = instance.passwords.iter().any(|p| {
        p.worker_id == worker_id
            && matches!(
                p.state(),
                v1::PasswordState::Sealed | v1::PasswordState::Legacy
            )
    });
    if !sealed {
        let w = rpc(admin
            .get_worker(v1::WorkerRef {
                r#ref: Some(v1::worker_ref::Ref::Id(worker_id)),
            })
            .await)?;
        notice(&format!(
            "instance {} has no password sealed to worker {}: run `pgsnap instance set-password \
             {} --worker {}`",
            instance.name,
            w.name,
            instance_arg(instance.id, &instance.name),
            w.name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_name_the_fixing_command() {
        let i = v1::Instance {
            id: 3,
            name: "src".into(),
            has_password: true,
            passwords: vec![
                v1::InstancePassword {
                    worker_name: "w1".into(),
                    state: v1::PasswordState::Sealed as i32,
                    ..Default::default()
                },
                v1::InstancePassword {
                    worker_name: "w2".into(),
                    state: v1::PasswordState::Missing as i32,
                    ..Default::default()
                },
                v1::InstancePassword {
                    worker_name: "w3".into(),
                    state: v1::PasswordState::Stale as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            missing_notes(&i),
            [
                "instance src has no password sealed to worker w2: run `pgsnap instance \
                 set-password src --worker w2`",
                "instance src has a password sealed to an old key of worker w3: run `pgsnap \
                 instance set-password src --worker w3`"
            ]
        );
        let to = [SealedTo {
            worker: "w1".into(),
            fingerprint: "ab".into(),
        }];
        assert_eq!(sealed_note(&to), "password sealed to worker w1 (key ab)");
    }
}
