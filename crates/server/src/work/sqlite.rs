//! The embedded engine: jobs and schedules in one SQLite database in the data directory
//! (`async.sqlite3`), in WAL mode with `synchronous = FULL`, so that a transaction that
//! returned is on disk: an invocation answered 202 survives kill -9 and power loss. Every
//! state change is one transaction.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

#[cfg(test)]
use super::store::new_id;
use super::store::{
    Attempt, Callback, Ended, Inserted, Job, Kind, ScheduleRow, Status, StoreError, end_attempt, interrupted,
};

/// The database, shared by the handlers and the workers. SQLite serialises writers anyway;
/// one connection behind a mutex, used from blocking threads, keeps it simple.
#[derive(Clone, Debug)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    request TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    callback_url TEXT,
    schedule TEXT,
    status TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    next_ms INTEGER NOT NULL,
    attempts TEXT NOT NULL,
    outcome TEXT,
    callback TEXT,
    callback_next_ms INTEGER,
    tick_ms INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, next_ms);
CREATE INDEX IF NOT EXISTS jobs_callbacks ON jobs (callback_next_ms) WHERE callback_next_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_schedule ON jobs (schedule, created_ms) WHERE schedule IS NOT NULL;
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    paused INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    next_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ticks (
    schedule TEXT NOT NULL,
    tick_ms INTEGER NOT NULL,
    job TEXT NOT NULL,
    PRIMARY KEY (schedule, tick_ms)
);
";

const COLUMNS: &str = "id, kind, request, idempotency_key, callback_url, schedule, status, created_ms, started_ms, \
                       finished_ms, next_ms, attempts, outcome, callback, tick_ms";

/// Column `i`, JSON text or NULL, read as a `T`.
fn json<T: serde::de::DeserializeOwned>(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(i)?;
    text.map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

fn row_to_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let kind: String = row.get(1)?;
    let status: String = row.get(6)?;
    Ok(Job {
        id: row.get(0)?,
        kind: if kind == "build" { Kind::Build } else { Kind::Call },
        request: json(row, 2)?.unwrap_or(Value::Null),
        idempotency_key: row.get(3)?,
        callback_url: row.get(4)?,
        schedule: row.get(5)?,
        status: Status::parse(&status).unwrap_or(Status::Failed),
        created_ms: row.get(7)?,
        started_ms: row.get(8)?,
        finished_ms: row.get(9)?,
        next_ms: row.get(10)?,
        attempts: json(row, 11)?.unwrap_or_default(),
        outcome: json(row, 12)?,
        callback: json(row, 13)?,
        tick_ms: row.get(14)?,
        lease: None,
    })
}

fn insert_job(tx: &Connection, job: &Job) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO jobs ({COLUMNS}, callback_next_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, NULL)"
        ),
        params![
            job.id,
            job.kind.name(),
            job.request.to_string(),
            job.idempotency_key,
            job.callback_url,
            job.schedule,
            job.status.name(),
            job.created_ms,
            job.started_ms,
            job.finished_ms,
            job.next_ms,
            serde_json::to_string(&job.attempts)?,
            job.outcome.as_ref().map(serde_json::to_string).transpose()?,
            job.callback.as_ref().map(serde_json::to_string).transpose()?,
            job.tick_ms,
        ],
    )?;
    Ok(())
}

/// Stores what ending an attempt changed of `job` (see [`end_attempt`]).
fn store_end(tx: &Connection, job: &Job) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE jobs SET status = ?2, next_ms = ?3, finished_ms = ?4, attempts = ?5, outcome = ?6, \
         callback = ?7, callback_next_ms = ?8 WHERE id = ?1",
        params![
            job.id,
            job.status.name(),
            job.next_ms,
            job.finished_ms,
            serde_json::to_string(&job.attempts)?,
            job.outcome.as_ref().map(serde_json::to_string).transpose()?,
            job.callback.as_ref().map(serde_json::to_string).transpose()?,
            job.callback.as_ref().map(|c| c.next_ms),
        ],
    )?;
    Ok(())
}

fn get_job(conn: &Connection, id: &str) -> rusqlite::Result<Option<Job>> {
    conn.query_row(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"), [id], row_to_job).optional()
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is synced before it returns (NORMAL in WAL mode may lose the last
        // transactions on power loss, and "accepted" must mean kept).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Sqlite { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` on the connection in a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut conn)
        })
        .await?
    }

    /// Records a new job, unless one with its idempotency key exists (then that one), or
    /// `max_queued` are waiting.
    pub async fn insert(&self, job: Job, max_queued: u64) -> Result<Inserted, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            if let Some(key) = &job.idempotency_key {
                let existing = tx
                    .query_row(&format!("SELECT {COLUMNS} FROM jobs WHERE idempotency_key = ?1"), [key], row_to_job)
                    .optional()?;
                if let Some(existing) = existing {
                    return Ok(Inserted::Existing(existing));
                }
            }
            let queued: u64 = tx.query_row("SELECT count(*) FROM jobs WHERE status = 'queued'", [], |r| r.get(0))?;
            if queued >= max_queued {
                return Ok(Inserted::Full(queued));
            }
            insert_job(&tx, &job)?;
            tx.commit()?;
            Ok(Inserted::New(job))
        })
        .await
    }

    pub async fn get(&self, id: String) -> Result<Option<Job>, StoreError> {
        self.with(move |conn| Ok(get_job(conn, &id)?)).await
    }

    /// Jobs of `kind`, newest first, optionally of one status or one schedule.
    pub async fn list(
        &self,
        kind: Kind,
        status: Option<Status>,
        schedule: Option<String>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        self.with(move |conn| {
            let mut statement = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE kind = ?1 AND (?2 IS NULL OR status = ?2) \
                 AND (?3 IS NULL OR schedule = ?3) ORDER BY created_ms DESC, id LIMIT ?4"
            ))?;
            let rows =
                statement.query_map(params![kind.name(), status.map(Status::name), schedule, limit], row_to_job)?;
            Ok(rows.collect::<rusqlite::Result<Vec<Job>>>()?)
        })
        .await
    }

    pub async fn depth(&self) -> Result<(u64, u64), StoreError> {
        self.with(|conn| {
            let count = |status: &str| -> rusqlite::Result<u64> {
                conn.query_row("SELECT count(*) FROM jobs WHERE status = ?1", [status], |r| r.get(0))
            };
            Ok((count("queued")?, count("running")?))
        })
        .await
    }

    /// Takes the oldest job that is due, marks it running and records its new attempt.
    pub async fn claim(&self, now_ms: u64) -> Result<Option<Job>, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let job = tx
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM jobs WHERE status = 'queued' AND next_ms <= ?1 \
                         ORDER BY next_ms, created_ms LIMIT 1"
                    ),
                    [now_ms],
                    row_to_job,
                )
                .optional()?;
            let Some(mut job) = job else { return Ok(None) };
            job.status = Status::Running;
            job.started_ms.get_or_insert(now_ms);
            job.attempts.push(Attempt {
                number: job.attempts.len() as u32 + 1,
                started_ms: now_ms,
                finished_ms: None,
                status: None,
                error: None,
            });
            tx.execute(
                "UPDATE jobs SET status = 'running', started_ms = ?2, attempts = ?3 WHERE id = ?1",
                params![job.id, job.started_ms, serde_json::to_string(&job.attempts)?],
            )?;
            tx.commit()?;
            Ok(Some(job))
        })
        .await
    }

    /// Records how the running attempt ended: the job is queued again for `retry_at_ms`,
    /// or finished (its callback then pending, when it has one).
    pub async fn finish(&self, job: &Job, ended: Ended, now_ms: u64) -> Result<Option<Job>, StoreError> {
        let id = job.id.clone();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let Some(mut job) = get_job(&tx, &id)? else { return Ok(None) };
            if job.status != Status::Running {
                // Recovered and re-run meanwhile (it cannot be, with one server per
                // database, but an answer is not recorded twice).
                return Ok(None);
            }
            end_attempt(&mut job, ended, now_ms);
            store_end(&tx, &job)?;
            tx.commit()?;
            Ok(Some(job))
        })
        .await
    }

    /// At start-up: the attempts a previous process left running ended when it did. Each
    /// is recorded as such (503), and its job queued again, or failed when it had all its
    /// attempts. Returns how many were queued again and how many failed.
    pub async fn recover(&self, max_attempts: u32, now_ms: u64) -> Result<(u32, u32), StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let running: Vec<Job> = {
                let mut statement = tx.prepare(&format!("SELECT {COLUMNS} FROM jobs WHERE status = 'running'"))?;
                statement.query_map([], row_to_job)?.collect::<rusqlite::Result<_>>()?
            };
            let (mut queued, mut failed) = (0, 0);
            for mut job in running {
                if interrupted(&mut job, max_attempts, now_ms) {
                    queued += 1;
                } else {
                    failed += 1;
                }
                store_end(&tx, &job)?;
            }
            tx.commit()?;
            Ok((queued, failed))
        })
        .await
    }

    /// Finished jobs whose callback is due.
    pub async fn callbacks_due(&self, now_ms: u64, limit: u32) -> Result<Vec<Job>, StoreError> {
        self.with(move |conn| {
            let mut statement = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE callback_next_ms IS NOT NULL AND callback_next_ms <= ?1 \
                 ORDER BY callback_next_ms LIMIT ?2"
            ))?;
            let rows = statement.query_map(params![now_ms, limit], row_to_job)?;
            Ok(rows.collect::<rusqlite::Result<Vec<Job>>>()?)
        })
        .await
    }

    /// Records a callback attempt: delivered or failed for good (no next time), or due
    /// again at `next_ms`.
    pub async fn callback_tried(&self, id: String, callback: Callback) -> Result<(), StoreError> {
        self.with(move |conn| {
            let next = (callback.state == "pending").then_some(callback.next_ms);
            conn.execute(
                "UPDATE jobs SET callback = ?2, callback_next_ms = ?3 WHERE id = ?1",
                params![id, serde_json::to_string(&callback)?, next],
            )?;
            Ok(())
        })
        .await
    }

    /// Drops finished jobs (and their ticks) that finished before `before_ms` and have no
    /// callback left to deliver.
    pub async fn purge(&self, before_ms: u64) -> Result<usize, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM ticks WHERE job IN (SELECT id FROM jobs WHERE finished_ms < ?1 \
                 AND callback_next_ms IS NULL)",
                [before_ms],
            )?;
            let n = tx.execute("DELETE FROM jobs WHERE finished_ms < ?1 AND callback_next_ms IS NULL", [before_ms])?;
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    // Schedules.

    /// Adds or replaces a schedule. Returns whether it replaced one.
    pub async fn put_schedule(&self, row: ScheduleRow) -> Result<bool, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let existed: bool = tx
                .query_row("SELECT count(*) FROM schedules WHERE name = ?1", [&row.name], |r| r.get::<_, u64>(0))?
                > 0;
            tx.execute(
                "INSERT INTO schedules (name, spec, paused, created_ms, next_ms) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (name) DO UPDATE SET spec = ?2, paused = ?3, next_ms = ?5",
                params![row.name, row.spec.to_string(), row.paused, row.created_ms, row.next_ms],
            )?;
            tx.commit()?;
            Ok(existed)
        })
        .await
    }

    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        self.with(|conn| {
            let mut statement =
                conn.prepare("SELECT name, spec, paused, created_ms, next_ms FROM schedules ORDER BY name")?;
            let rows = statement.query_map([], |row| {
                let spec: String = row.get(1)?;
                Ok(ScheduleRow {
                    name: row.get(0)?,
                    spec: serde_json::from_str(&spec).unwrap_or(Value::Null),
                    paused: row.get(2)?,
                    created_ms: row.get(3)?,
                    next_ms: row.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub async fn delete_schedule(&self, name: String) -> Result<bool, StoreError> {
        self.with(move |conn| Ok(conn.execute("DELETE FROM schedules WHERE name = ?1", [name])? > 0)).await
    }

    /// Runs a tick of schedule `name` at most once: moves the schedule from its next tick
    /// `expected_ms` to `next_ms` and records the tick `tick_ms` with its job (none when
    /// the tick is skipped), in one transaction. Returns false when the tick had been run
    /// already or the schedule changed meanwhile (paused, replaced, or run by another).
    pub async fn run_tick(
        &self,
        name: String,
        expected_ms: u64,
        tick_ms: Option<u64>,
        job: Option<Job>,
        next_ms: u64,
    ) -> Result<bool, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let moved = tx.execute(
                "UPDATE schedules SET next_ms = ?3 WHERE name = ?1 AND next_ms = ?2 AND paused = 0",
                params![name, expected_ms, next_ms],
            )?;
            if moved == 0 {
                return Ok(false);
            }
            if let (Some(tick), Some(mut job)) = (tick_ms, job) {
                job.tick_ms = Some(tick);
                let new = tx.execute(
                    "INSERT INTO ticks (schedule, tick_ms, job) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    params![name, tick, job.id],
                )?;
                if new == 0 {
                    return Ok(false);
                }
                insert_job(&tx, &job)?;
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Sqlite) {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("async.sqlite3")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn an_idempotency_key_names_one_job() {
        let (_dir, store) = store();
        let mut job = Job::new(Kind::Call, serde_json::json!({"call": "A()"}), 1);
        job.idempotency_key = Some("k".into());
        let first = match store.insert(job.clone(), 10).await.unwrap() {
            Inserted::New(job) => job,
            other => panic!("{other:?}"),
        };
        job.id = new_id();
        match store.insert(job, 10).await.unwrap() {
            Inserted::Existing(existing) => assert_eq!(existing.id, first.id),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_running_job_left_by_a_dead_server_is_counted_and_queued_again() {
        let (dir, store) = store();
        store.insert(Job::new(Kind::Call, Value::Null, 1), 10).await.unwrap();
        let claimed = store.claim(2).await.unwrap().unwrap();
        assert_eq!(claimed.attempts.len(), 1);
        assert!(store.claim(2).await.unwrap().is_none(), "a running job is not claimed twice");
        drop(store);
        let store = Sqlite::open(&dir.path().join("async.sqlite3")).unwrap();
        assert_eq!(store.recover(2, 3).await.unwrap(), (1, 0));
        let again = store.claim(4).await.unwrap().unwrap();
        assert_eq!(again.id, claimed.id);
        assert_eq!(again.attempts.len(), 2);
        assert_eq!(again.attempts[0].status, Some(503));
        assert_eq!(store.recover(2, 5).await.unwrap(), (0, 1), "its last attempt: failed");
        let job = store.get(claimed.id).await.unwrap().unwrap();
        assert_eq!(job.status, Status::Failed);
    }

    #[tokio::test]
    async fn a_tick_runs_once() {
        let (_dir, store) = store();
        let row = ScheduleRow { name: "s".into(), spec: Value::Null, paused: false, created_ms: 0, next_ms: 1000 };
        store.put_schedule(row).await.unwrap();
        let job = || {
            let mut job = Job::new(Kind::Call, Value::Null, 1000);
            job.schedule = Some("s".into());
            Some(job)
        };
        assert!(store.run_tick("s".into(), 1000, Some(1000), job(), 2000).await.unwrap());
        assert!(!store.run_tick("s".into(), 1000, Some(1000), job(), 2000).await.unwrap(), "moved on already");
        // The schedule is put back to the tick (replaced): the tick is still not run twice.
        let row = ScheduleRow { name: "s".into(), spec: Value::Null, paused: false, created_ms: 0, next_ms: 1000 };
        store.put_schedule(row).await.unwrap();
        assert!(!store.run_tick("s".into(), 1000, Some(1000), job(), 2000).await.unwrap());
        assert_eq!(store.list(Kind::Call, None, Some("s".into()), 10).await.unwrap().len(), 1);
    }
}
