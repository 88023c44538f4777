-- provstick store schema 3 (PostgreSQL): reconciliation of stick ledgers, the
-- discrepancies found, DHCP leases and the audit log (issue 10). Times are
-- Unix microseconds (UTC).

-- A stick the operator declared lost (its allocated entries should be voided).
ALTER TABLE sticks ADD COLUMN lost_at BIGINT;

-- ledger_imports: one row per ledger read (the same bytes imported twice
-- give two rows with the same digest). stick is the label the ledger names
-- ('' when it names none); known says whether this pool has that stick.
CREATE TABLE ledger_imports (
    id           BIGSERIAL PRIMARY KEY,
    at           BIGINT  NOT NULL,
    source       TEXT    NOT NULL,
    stick        TEXT    NOT NULL,
    known        BIGINT  NOT NULL,
    digest       TEXT    NOT NULL,
    lines        BIGINT  NOT NULL,
    records      BIGINT  NOT NULL,
    damaged      BIGINT  NOT NULL,
    torn_tail    BIGINT  NOT NULL,
    max_seq      BIGINT  NOT NULL,
    max_consumed BIGINT  NOT NULL,
    station      TEXT    NOT NULL,
    actor        TEXT    NOT NULL
);
CREATE INDEX ledger_imports_stick ON ledger_imports (stick, id);

-- ledger_records: every valid ledger line of this pool's sticks, once (its
-- checksum tells two copies of a stick apart). at is the target's clock.
CREATE TABLE ledger_records (
    stick       TEXT    NOT NULL,
    seq         BIGINT  NOT NULL,
    sum         TEXT    NOT NULL,
    kase        TEXT    NOT NULL,
    record      BIGINT  NOT NULL,
    pid         TEXT    NOT NULL,
    uuid        TEXT    NOT NULL,
    consumed    BIGINT  NOT NULL,
    at          BIGINT  NOT NULL,
    imported_at BIGINT  NOT NULL,
    PRIMARY KEY (stick, seq, sum)
);
CREATE INDEX ledger_records_pid ON ledger_records (pid);

-- discrepancies found when a ledger was imported, kept until resolved; the
-- same finding twice is one row.
CREATE TABLE discrepancies (
    id       BIGSERIAL PRIMARY KEY,
    kind     TEXT    NOT NULL,
    severity TEXT    NOT NULL,
    subject  TEXT    NOT NULL,
    detail   TEXT    NOT NULL,
    advice   TEXT    NOT NULL,
    at       BIGINT  NOT NULL,
    UNIQUE (kind, subject, detail)
);

-- dhcp_leases: the kiosk's DHCP server's leases, by client MAC.
CREATE TABLE dhcp_leases (
    mac        TEXT    PRIMARY KEY,
    ip         TEXT    NOT NULL UNIQUE,
    hostname   TEXT    NOT NULL DEFAULT '',
    expires_at BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);

-- audit is the structured record of every provisioning action: who (the
-- kiosk or an operator), what, on which machine.
CREATE TABLE audit (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT  NOT NULL,
    station TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    pid     TEXT    NOT NULL DEFAULT '',
    uuid    TEXT    NOT NULL DEFAULT '',
    outcome TEXT    NOT NULL DEFAULT '',
    detail  TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX audit_pid ON audit (pid, id);
