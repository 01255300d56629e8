-- Usage is journaled per (account, batch), not per request (issue 11: the
-- journal was most of PostgreSQL's CPU time per request).
--
-- Before: every costed usage row got its own journal entry (request_id
-- UNIQUE) with two lines, customer -cost and revenue +cost: three rows,
-- five index entries and four foreign-key checks per request.
-- Now: each batch the ledger commits writes, per account, one `usage` entry
-- (request_id NULL) with the same two lines for the account's total, and per
-- request one row of journal_requests naming the entry that carries its
-- money and the amount. journal_requests.request_id is the PRIMARY KEY, so
-- money still never moves twice for a request, even if its usage row comes
-- back with another started_at; `tollgate ledger check` proves that every
-- usage entry's customer line is minus the sum of its requests and that
-- every costed usage row has its request with the same amount.
-- The foreign key to journal_entries is checked once per request (about
-- 1 us in pg_stat_statements; dropping it changed nothing measurable in the
-- ledger bench), so it stays, like journal_lines' own.
CREATE TABLE journal_requests (
    request_id      text PRIMARY KEY,
    entry_id        bigint NOT NULL REFERENCES journal_entries(id),
    amount_micros   bigint NOT NULL CHECK (amount_micros > 0)
);

-- Entries written before: each is its own request's entry. Idempotent
-- (ON CONFLICT): a ledger of this version runs the same statement at start
-- (ledger_store.c, s_carry_over), so entries that older ledgers still wrote
-- per request during a rolling upgrade (the migration Job runs beside the
-- programs, docs/cluster.md) are carried over too.
INSERT INTO journal_requests (request_id, entry_id, amount_micros)
SELECT e.request_id, e.id, -l.amount_micros
FROM journal_entries e
JOIN journal_lines l ON l.entry_id = e.id
JOIN ledger_accounts la ON la.id = l.ledger_account_id AND la.account_id IS NOT NULL
WHERE e.kind = 'usage' AND e.request_id IS NOT NULL AND l.amount_micros < 0
ON CONFLICT (request_id) DO NOTHING;
