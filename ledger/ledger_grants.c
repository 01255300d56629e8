#include "ledger_grants.h"
#include "proto_db.h"
#include "proto_log.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define S_FIRST_RUN_MS 200 //  after start: grant what is due without waiting an interval

struct _ledger_grants_t {
    proto_loop_t *loop;        //  the program's loop (borrowed)
    char *url;                 //  database_url, for reconnecting
    PGconn *db;                //  our own connection, NULL while away
    int timer;                 //  repeating run
    int first_timer;           //  the run soon after start, 0 once done
    bool failing;              //  the last run failed (logged once per outage)
    proto_metric_t *m_granted; //  periods granted
    proto_metric_t *m_failed;  //  runs that failed
};

static const char *s_ledger_accounts =
    "INSERT INTO ledger_accounts (account_id) "
    "SELECT DISTINCT g.account_id FROM credit_grants g WHERE g.removed_at IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM ledger_accounts la WHERE la.account_id = g.account_id) "
    "ON CONFLICT (account_id) DO NOTHING";

//  Entry ids are drawn up front for every due period (a period another
//  instance takes leaves a gap in the sequence, nothing else), so the
//  period row, its entry and its lines are written from `fresh` alone.
//  The foreign key from a period to its entry is checked at the end of
//  the statement, when the entry is there. A grant made after
//  s_ledger_accounts ran may have no ledger account yet: it is not due
//  until the next round, or its period would be taken with no entry.
static const char *s_grant =
    "WITH due AS ("
    "  SELECT g.id, p.start,"
    "         nextval(pg_get_serial_sequence('journal_entries', 'id')) AS entry_id"
    "  FROM credit_grants g CROSS JOIN LATERAL generate_series("
    "    coalesce((SELECT max(c.period_start) FROM credit_grant_periods c WHERE c.grant_id = g.id)"
    "             + ('1 ' || g.every)::interval, date_trunc(g.every, g.starts_at)),"
    "    date_trunc(g.every, now()), ('1 ' || g.every)::interval) AS p(start)"
    "  WHERE g.removed_at IS NULL"
    "    AND EXISTS (SELECT 1 FROM ledger_accounts la WHERE la.account_id = g.account_id)"
    "), fresh AS ("
    "  INSERT INTO credit_grant_periods (grant_id, period_start, entry_id)"
    "  SELECT id, start, entry_id FROM due ORDER BY id, start"
    "  ON CONFLICT (grant_id, period_start) DO NOTHING"
    "  RETURNING grant_id, period_start, entry_id"
    "), granted AS ("
    "  SELECT f.entry_id, f.period_start, g.id AS grant_id, g.account_id, g.amount_micros,"
    "         g.every, la.id AS la"
    "  FROM fresh f JOIN credit_grants g ON g.id = f.grant_id"
    "  JOIN ledger_accounts la ON la.account_id = g.account_id"
    "), entries AS ("
    "  INSERT INTO journal_entries (id, kind, reason, created_by)"
    "  SELECT entry_id, 'grant', format('grant %s: every %s, the %s from %s', grant_id, every,"
    "         every, to_char(period_start, 'YYYY-MM-DD')), 'ledger' FROM granted"
    "), lines AS ("
    "  INSERT INTO journal_lines (entry_id, ledger_account_id, amount_micros)"
    "  SELECT entry_id, la, amount_micros FROM granted"
    "  UNION ALL"
    "  SELECT entry_id, (SELECT id FROM ledger_accounts WHERE system_name = 'grants'),"
    "         -amount_micros FROM granted"
    "), moved AS ("
    "  UPDATE accounts SET balance_micros = balance_micros + t.total"
    "  FROM (SELECT account_id, sum(amount_micros) AS total FROM granted GROUP BY account_id) t"
    "  WHERE accounts.id = t.account_id"
    ") SELECT count(*) FROM granted";

static bool s_connected(ledger_grants_t *self)
{
    if (self->db && PQstatus(self->db) == CONNECTION_OK)
        return true;
    if (self->db)
        PQfinish(self->db);
    char error[512];
    self->db = proto_db_connect_once(self->url, error, sizeof error);
    if (!self->db && !self->failing) {
        log_warn(NULL, "grants: %s", error);
        self->failing = true;
    }
    return self->db != NULL;
}

//  Runs the grant transaction. Returns periods granted, or -1 with error.
static int s_run(ledger_grants_t *self, char *error, size_t error_size)
{
    //  Periods are UTC days, weeks and months whatever the server's zone:
    //  date_trunc and interval arithmetic on timestamptz follow TimeZone.
    if (proto_db_exec(self->db, "BEGIN", error, error_size) != 0 ||
        proto_db_exec(self->db, "SET LOCAL TIME ZONE 'UTC'", error, error_size) != 0 ||
        proto_db_exec(self->db, s_ledger_accounts, error, error_size) != 0)
        return -1;
    PGresult *result = PQexec(self->db, s_grant);
    if (PQresultStatus(result) != PGRES_TUPLES_OK) {
        proto_db_error(self->db, error, error_size);
        PQclear(result);
        return -1;
    }
    int granted = atoi(PQgetvalue(result, 0, 0));
    PQclear(result);
    //  NOTIFY is delivered at COMMIT, so billing reloads what committed.
    if (granted > 0 && proto_db_exec(self->db, "SELECT pg_notify('tollgate_config', 'accounts')",
                                     error, error_size) != 0)
        return -1;
    if (proto_db_exec(self->db, "COMMIT", error, error_size) != 0)
        return -1;
    return granted;
}

int ledger_grants_run(ledger_grants_t *self)
{
    if (!s_connected(self)) {
        proto_metric_add(self->m_failed, 1);
        return -1;
    }
    char error[512];
    int granted = s_run(self, error, sizeof error);
    if (granted < 0) {
        proto_metric_add(self->m_failed, 1);
        if (!self->failing)
            log_warn(NULL, "grants: not granted this time, retrying later: %s", error);
        self->failing = true;
        if (PQstatus(self->db) != CONNECTION_OK) {
            PQfinish(self->db);
            self->db = NULL;
        } else {
            char ignored[256];
            proto_db_exec(self->db, "ROLLBACK", ignored, sizeof ignored);
        }
        return -1;
    }
    if (self->failing)
        log_info(NULL, "grants: running again");
    self->failing = false;
    if (granted > 0) {
        proto_metric_add(self->m_granted, granted);
        log_info(NULL, "grants: %d period(s) granted", granted);
    }
    return granted;
}

static void s_due(proto_loop_t *loop, int id, void *arg)
{
    ledger_grants_t *self = arg;
    if (id == self->first_timer)
        self->first_timer = 0;
    ledger_grants_run(self);
}

ledger_grants_t *ledger_grants_new(proto_service_t *service)
{
    proto_config_t *config = proto_service_config(service);
    proto_metrics_t *metrics = proto_service_metrics(service);
    ledger_grants_t *self = calloc(1, sizeof *self);
    assert(self);
    self->loop = proto_service_loop(service);
    self->url = strdup(proto_config_str(config, "database_url"));
    self->m_granted = proto_metrics_counter(metrics, "tollgate_ledger_grants_total",
                                            "Recurring credit grant periods granted.", NULL);
    self->m_failed = proto_metrics_counter(metrics, "tollgate_ledger_grant_failures_total",
                                           "Grant runs that failed (retried).", NULL);
    self->timer = proto_loop_add_timer(
        self->loop, (uint64_t)proto_config_int(config, "ledger.grant_interval_ms"), true, s_due,
        self);
    self->first_timer = proto_loop_add_timer(self->loop, S_FIRST_RUN_MS, false, s_due, self);
    return self;
}

void ledger_grants_destroy(ledger_grants_t **self_p)
{
    assert(self_p);
    ledger_grants_t *self = *self_p;
    if (!self)
        return;
    proto_loop_cancel_timer(self->loop, self->timer);
    if (self->first_timer)
        proto_loop_cancel_timer(self->loop, self->first_timer);
    if (self->db)
        PQfinish(self->db);
    free(self->url);
    free(self);
    *self_p = NULL;
}
