-- deployapi schema, version 9 (deployapi/repository/schema.py: SCHEMA_VERSION).
--
-- Run statement by statement at every start-up, inside the transaction that
-- also applies any migration steps (repository/schema.py: migrate), so every statement
-- must be idempotent: CREATE ... IF NOT EXISTS, never DROP.  The version is
-- recorded in PRAGMA user_version.

-- Current state: one row per deployment, updated in place by lifecycle actions.
-- Reads of current state come from here and never replay events.
CREATE TABLE IF NOT EXISTS deployments (
    id            TEXT PRIMARY KEY,
    service       TEXT NOT NULL,
    environment   TEXT NOT NULL,
    version       TEXT NOT NULL,
    requester     TEXT NOT NULL,
    work_refs     TEXT NOT NULL CHECK (json_valid(work_refs) AND json_type(work_refs) = 'array'),
    risk          TEXT,
    rollback_plan TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending_approval', 'approved', 'rejected',
                                                  'started', 'succeeded', 'failed', 'rolled_back',
                                                  'cancelled')),
    reviewed_by   TEXT,
    reviewed_at   TEXT,
    -- RFC 3339 UTC with microseconds and a trailing Z: fixed width, so text
    -- order is time order and the listing can sort and seek on it directly.
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    -- Review policies (version 7; added at the end, where ALTER TABLE puts
    -- them in an upgraded database).  How many distinct approvals the
    -- deployment needs, fixed at creation by its environment's policy; the
    -- approvals so far, in order ([{"actor", "note", "created_at"}], the
    -- approved events' own fields); the digest of the policy it was created
    -- under (NULL before policies existed).
    required_approvals INTEGER NOT NULL DEFAULT 1 CHECK (required_approvals BETWEEN 0 AND 10),
    approvals     TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(approvals) AND json_type(approvals) = 'array'),
    policy_digest TEXT,
    -- Pipeline metadata (version 8), all optional and fixed at creation: the
    -- commit, where it lives, the ref, when it was committed (UTC, as created_at),
    -- links ([{"rel", "url"}]) and labels ({key: value}); and the version a
    -- rollback went back to, when it said.
    commit_sha    TEXT,
    repository    TEXT,
    ref           TEXT,
    committed_at  TEXT,
    links         TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(links) AND json_type(links) = 'array'),
    labels        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(labels) AND json_type(labels) = 'object'),
    rolled_back_to TEXT
);

-- The listing (newest first, ties broken by id) with any combination of the
-- service, environment and status filters is one range scan of one of these
-- indexes, already in listing order: no sort, and a cursor seeks straight to
-- its page.  requester, the filter on-call and auditors ask for most after
-- those, gets one too, which also serves requester combined with the others
-- (see repository/pages.py: _listing_index).
CREATE INDEX IF NOT EXISTS deployments_newest_first
    ON deployments (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS deployments_by_service
    ON deployments (service, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS deployments_by_environment
    ON deployments (environment, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS deployments_by_status
    ON deployments (status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS deployments_by_service_environment
    ON deployments (service, environment, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS deployments_by_service_status
    ON deployments (service, status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS deployments_by_environment_status
    ON deployments (environment, status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS deployments_by_service_environment_status
    ON deployments (service, environment, status, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS deployments_by_requester
    ON deployments (requester, created_at DESC, id DESC);

-- The listing filters that pick out few deployments (version 8): an exact
-- version, and a commit by a prefix of its id (a range of this index; only
-- deployments that name a commit are in it).  The page is the matches sorted,
-- and the matches are few.  (repository/pages.py: _driver)
CREATE INDEX IF NOT EXISTS deployments_by_version
    ON deployments (version, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS deployments_by_commit_sha
    ON deployments (commit_sha, created_at DESC, id DESC) WHERE commit_sha IS NOT NULL;
-- updated_after / updated_before: the deployments changed in a time range, when
-- that range holds few (the listing counts them on this index first, and
-- otherwise reads in listing order and filters: repository/pages.py).
CREATE INDEX IF NOT EXISTS deployments_by_updated
    ON deployments (updated_at, id);

-- GET /environments and GET /metrics/dora, pair by pair: the newest success
-- (status = 'succeeded' ORDER BY updated_at DESC), the newest event of each
-- status (max(updated_at)) and the deployments touched since a time are each
-- one seek.  The listing indexes order by created_at, which would mean reading
-- every deployment of a status to find its newest update (docs/performance.md,
-- "What is live, and DORA metrics, at scale").
CREATE INDEX IF NOT EXISTS deployments_by_service_environment_status_updated
    ON deployments (service, environment, status, updated_at DESC, id DESC);

-- History: one row per creation or action, appended in the same transaction
-- that changes the deployment.  AUTOINCREMENT keeps ids strictly increasing and
-- never reused, so id order is commit order.
CREATE TABLE IF NOT EXISTS deployment_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    sequence      INTEGER NOT NULL CHECK (sequence >= 1),
    type          TEXT NOT NULL CHECK (type IN ('created', 'approved', 'rejected', 'started',
                                                'succeeded', 'failed', 'rolled_back', 'cancelled')),
    actor         TEXT NOT NULL,
    note          TEXT,
    from_status   TEXT,
    to_status     TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    -- SHA-256 over this event's fields and the previous event's hash, and for
    -- a created event its deployment's creation content: one chain across all
    -- events in id order (deployapi/chain.py; version 3, content since 4).
    hash          TEXT,
    -- Facts particular to the event, a JSON object or NULL, and the digest of
    -- the policy in force when it was written (version 7; NULL before).
    details       TEXT CHECK (details IS NULL OR (json_valid(details) AND json_type(details) = 'object')),
    policy_digest TEXT,
    UNIQUE (deployment_id, sequence)
);

-- GET /events?type=: the events of one type in id order are one range of
-- this index (type, then the rowid, which is the event id), so a page costs
-- its own length however rare the type; without it the feed read every event
-- after `after` to find a rare type.
CREATE INDEX IF NOT EXISTS deployment_events_by_type ON deployment_events (type);

-- GET /events?since=: where in id order the events created at or after a time
-- begin.  Ids follow commit order, but created_at need not (a clock that
-- stepped back, a history copied in), so that place cannot be found by
-- bisecting ids: the smallest id of an event at or after `since` is the
-- smallest rowid in one range of this index (repository/pages.py:
-- SINCE_PROBE_SQL).  Without it a first page with a recent `since` read the
-- whole history before it.
CREATE INDEX IF NOT EXISTS deployment_events_by_created_at ON deployment_events (created_at);

-- History is append-only in the database itself, so no code path (ours or a
-- hand-typed sqlite3 session) can rewrite or erase it.
CREATE TRIGGER IF NOT EXISTS deployment_events_no_update
BEFORE UPDATE ON deployment_events
BEGIN
    SELECT RAISE(ABORT, 'deployment_events is append-only: UPDATE is not allowed');
END;

CREATE TRIGGER IF NOT EXISTS deployment_events_no_delete
BEFORE DELETE ON deployment_events
BEGIN
    SELECT RAISE(ABORT, 'deployment_events is append-only: DELETE is not allowed');
END;

-- What was requested never changes after creation: the columns of the
-- creation content (lifecycle.CREATE_FIELDS), the id, created_at, and the
-- policy it was created under.  Only status, review metadata, approvals and
-- updated_at move, with an event each.  (The created event's hash covers the
-- content too, for whoever drops this.)
CREATE TRIGGER IF NOT EXISTS deployments_creation_is_fixed
BEFORE UPDATE OF id, service, environment, version, requester, work_refs, risk, rollback_plan, created_at,
    required_approvals, policy_digest, commit_sha, repository, ref, committed_at, links, labels
ON deployments
BEGIN
    SELECT RAISE(ABORT, 'what a deployment requested is fixed at creation: UPDATE of it is not allowed');
END;

-- A deployment with history cannot vanish either.
CREATE TRIGGER IF NOT EXISTS deployments_no_delete
BEFORE DELETE ON deployments
BEGIN
    SELECT RAISE(ABORT, 'deployments are never deleted');
END;

-- Two tables derived from each event as it is appended, by a trigger below,
-- for the reads that select events by the deployment's service and
-- environment.  Those live on the deployment, and a deployment's events are
-- spread over the whole history, so without a copy beside each event the feed
-- filtered by service sorted every event of that service, and the DORA
-- metrics read every deployment changed after the window began.  A
-- deployment's service and environment never change, so the copies stay true.
-- Like the history they are never updated; they are not under the hash chain
-- (they can be rebuilt from it).

-- Each event's scope, keyed (like its two indexes) so that the events of one
-- scope and type are in id order: GET /events?service=&environment= merges
-- one range per event type.  WITHOUT ROWID: the key is the table, one B-tree
-- fewer to write per event.
CREATE TABLE IF NOT EXISTS deployment_event_scopes (
    service     TEXT NOT NULL,
    environment TEXT NOT NULL,
    type        TEXT NOT NULL,
    event_id    INTEGER NOT NULL,
    PRIMARY KEY (service, environment, type, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deployment_event_scopes_by_service
    ON deployment_event_scopes (service, type, event_id);
CREATE INDEX IF NOT EXISTS deployment_event_scopes_by_environment
    ON deployment_event_scopes (environment, type, event_id);

-- The lifecycle steps the DORA metrics count and time (docs/metrics.md), one
-- row per step and its time, keyed so that a (service, environment, step)
-- over a window is one range of the primary key, with nothing else to read:
--   approved       at the approval that completed the review (not a partial one),
--                  microseconds since the request
--   started        at the start
--   succeeded      at the success, microseconds since the commit (committed_at; NULL without one)
--   finished       at the event that left started, microseconds since the start
--   failed         at the failure (a failed event, or a rollback not after one)
--   failed_change  the same failure, filed at the time its deployment started
-- `microseconds` is repository/insights_sql.py: _microseconds_between(from_at, at): exact, and
-- computed once, on insert.
CREATE TABLE IF NOT EXISTS deployment_steps (
    service     TEXT NOT NULL,
    environment TEXT NOT NULL,
    step        TEXT NOT NULL CHECK (step IN ('approved', 'started', 'succeeded', 'finished', 'failed',
                                              'failed_change')),
    at          TEXT NOT NULL,
    event_id    INTEGER NOT NULL,
    from_at     TEXT,
    microseconds INTEGER,
    PRIMARY KEY (service, environment, step, at, event_id)
) WITHOUT ROWID;

-- What the two tables hold for each event, defined once: the trigger inserts
-- the rows of the event just appended (SQLite pushes `event_id = NEW.id` into
-- every branch, so that is a few seeks), and a backfill inserts those of
-- older events (repository/schema.py: backfill_derived_rows).
CREATE VIEW IF NOT EXISTS deployment_event_scope_rows (service, environment, type, event_id) AS
SELECT d.service, d.environment, e.type, e.id
FROM deployment_events AS e JOIN deployments AS d ON d.id = e.deployment_id;

CREATE VIEW IF NOT EXISTS deployment_step_rows (service, environment, step, at, event_id, from_at, microseconds) AS
SELECT service, environment, step, at, event_id, from_at,
    CASE WHEN from_at IS NOT NULL THEN
        (CAST(strftime('%s', substr(at, 1, 19)) AS INTEGER) * 1000000 + CAST(substr(at, 21, 6) AS INTEGER))
        - (CAST(strftime('%s', substr(from_at, 1, 19)) AS INTEGER) * 1000000
           + CAST(substr(from_at, 21, 6) AS INTEGER))
    END
FROM (
    SELECT d.service, d.environment, 'approved' AS step, e.created_at AS at, e.id AS event_id,
        d.created_at AS from_at
    FROM deployment_events AS e JOIN deployments AS d ON d.id = e.deployment_id
    WHERE e.type = 'approved' AND e.to_status = 'approved'
    UNION ALL
    -- A success's time since its commit, when the deployment names one: the lead time for changes.
    SELECT d.service, d.environment, e.type, e.created_at, e.id,
        CASE WHEN e.type = 'succeeded' THEN d.committed_at END
    FROM deployment_events AS e JOIN deployments AS d ON d.id = e.deployment_id
    WHERE e.type IN ('started', 'succeeded')
    UNION ALL
    -- The event that left started ends the rollout: its time since the start.
    SELECT d.service, d.environment, 'finished', e.created_at, e.id, start.created_at
    FROM deployment_events AS e JOIN deployments AS d ON d.id = e.deployment_id
    JOIN deployment_events AS start ON start.deployment_id = e.deployment_id AND start.type = 'started'
    WHERE e.from_status = 'started'
    UNION ALL
    -- A deployment fails once: at its failed event, or at a rollback that
    -- follows none.  The change failure rate counts it by when it started.
    SELECT d.service, d.environment, kind.step,
        CASE kind.step WHEN 'failed' THEN e.created_at ELSE start.created_at END, e.id, NULL
    FROM deployment_events AS e JOIN deployments AS d ON d.id = e.deployment_id
    JOIN deployment_events AS start ON start.deployment_id = e.deployment_id AND start.type = 'started'
    JOIN (SELECT 'failed' AS step UNION ALL SELECT 'failed_change') AS kind
    WHERE e.type = 'failed' OR (e.type = 'rolled_back' AND e.from_status <> 'failed')
);

CREATE TRIGGER IF NOT EXISTS deployment_events_derive
AFTER INSERT ON deployment_events
BEGIN
    INSERT INTO deployment_event_scopes (service, environment, type, event_id)
    SELECT service, environment, type, event_id FROM deployment_event_scope_rows WHERE event_id = NEW.id;
    INSERT INTO deployment_steps (service, environment, step, at, event_id, from_at, microseconds)
    SELECT service, environment, step, at, event_id, from_at, microseconds
    FROM deployment_step_rows WHERE event_id = NEW.id AND NEW.type NOT IN ('created', 'rejected');
END;

-- The work references and labels of each deployment, one row each, keyed in
-- listing order (newest first by the deployment's created_at, then id), so
-- that ?work_ref= and ?label= read one range and stop at the page's end
-- (version 8).  Filled by the trigger below as each deployment is inserted,
-- from the views that define their rows (and fill them for older deployments
-- at the upgrade); a deployment's work_refs and labels never change, so the
-- copies stay true.  A label is stored as "key=value" (keys have no "=").
CREATE TABLE IF NOT EXISTS deployment_work_refs (
    work_ref              TEXT NOT NULL,
    deployment_created_at TEXT NOT NULL,
    deployment_id         TEXT NOT NULL,
    PRIMARY KEY (work_ref, deployment_created_at, deployment_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deployment_labels (
    label                 TEXT NOT NULL,
    deployment_created_at TEXT NOT NULL,
    deployment_id         TEXT NOT NULL,
    PRIMARY KEY (label, deployment_created_at, deployment_id)
) WITHOUT ROWID;

CREATE VIEW IF NOT EXISTS deployment_work_ref_rows (work_ref, deployment_created_at, deployment_id) AS
SELECT refs.value, d.created_at, d.id FROM deployments AS d, json_each(d.work_refs) AS refs;
CREATE VIEW IF NOT EXISTS deployment_label_rows (label, deployment_created_at, deployment_id) AS
SELECT labels.key || '=' || labels.value, d.created_at, d.id FROM deployments AS d, json_each(d.labels) AS labels;

CREATE TRIGGER IF NOT EXISTS deployments_derive
AFTER INSERT ON deployments
BEGIN
    INSERT INTO deployment_work_refs (work_ref, deployment_created_at, deployment_id)
    SELECT work_ref, deployment_created_at, deployment_id FROM deployment_work_ref_rows WHERE deployment_id = NEW.id;
    INSERT INTO deployment_labels (label, deployment_created_at, deployment_id)
    SELECT label, deployment_created_at, deployment_id FROM deployment_label_rows WHERE deployment_id = NEW.id;
END;

-- Per-database settings the application needs to keep across restarts
-- (for example the key that signs listing cursors).
CREATE TABLE IF NOT EXISTS settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Signs listing cursors (see deployapi/listing.py).  Made once per database,
-- so cursors survive restarts and are worthless against another database.
INSERT OR IGNORE INTO settings (name, value)
VALUES ('cursor_key', lower(hex(randomblob(32))));

-- Written by GET /healthz while writes are failing (disk full, read-only,
-- I/O errors), to see whether the storage takes a write of a create's size
-- again; one row, replaced each time (repository.Repository.ping).
CREATE TABLE IF NOT EXISTS write_probe (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    payload    BLOB NOT NULL,
    written_at TEXT NOT NULL
);

-- Responses to requests sent with an Idempotency-Key, stored in the same
-- transaction as the write they answer, so a retry gets the first answer
-- instead of a second write (version 2).  A key belongs to its caller: the
-- trusted identity, or '' for everyone when identities are not trusted
-- (version 4).  Only answers that changed something (2xx) are kept.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    caller      TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,   -- SHA-256 of method, path, identity and canonical body
    status      INTEGER NOT NULL,
    body        TEXT NOT NULL,
    location    TEXT,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (caller, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);

-- Webhooks (version 9).  Where each webhook of the configuration file has got
-- to, by its name: every event it matches up to delivered_through (an event
-- id) has been answered with a 2xx.  Moved forward in the transaction that
-- records the 2xx, so a restart resumes at the first event not acknowledged;
-- a new name starts at the newest event when it is first configured.  The
-- failed attempts at the next event, and when the next attempt is due, are
-- kept too, so that whoever delivers next keeps backing off (deployapi/delivery.py).
CREATE TABLE IF NOT EXISTS webhook_positions (
    name              TEXT PRIMARY KEY,
    delivered_through INTEGER NOT NULL CHECK (delivered_through >= 0),
    failed_attempts   INTEGER NOT NULL DEFAULT 0 CHECK (failed_attempts >= 0),
    last_attempt_at   TEXT,
    last_error        TEXT,
    next_attempt_at   TEXT,
    registered_at     TEXT NOT NULL
);

-- Who delivers webhooks for this database: at most one process at a time
-- holds this lease, renewing it while it works.  Another takes it over once
-- it has expired, or at once when its holder is a process of the same host
-- that no longer runs.  expires_at is Unix seconds.
CREATE TABLE IF NOT EXISTS webhook_deliverer (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    holder     TEXT NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    since      TEXT NOT NULL,
    expires_at REAL NOT NULL
);
