-- tollgate-admin (issue 12): account holders log in to the console and see
-- their own account only; logins lock out per (user, client address) and
-- per address with a back-off (the lock doubles each time within a day).

ALTER TABLE admin_users DROP CONSTRAINT admin_users_role_check;
ALTER TABLE admin_users
    ADD CONSTRAINT admin_users_role_check
        CHECK (role IN ('owner', 'operator', 'viewer', 'account')),
    ADD COLUMN account_id bigint REFERENCES accounts(id),
    ADD CONSTRAINT admin_users_account_check
        CHECK ((role = 'account') = (account_id IS NOT NULL));

-- A subject is now 'user:NAME ip:ADDRESS' (a pair) or 'ip:ADDRESS'; a user
-- alone is never locked, so nobody can lock the owner out from elsewhere.
-- strikes: locks in a row within a day; lock_ms: this lock's length.
ALTER TABLE login_lockouts
    ADD COLUMN strikes integer NOT NULL DEFAULT 1,
    ADD COLUMN lock_ms bigint NOT NULL DEFAULT 0;
DELETE FROM login_lockouts WHERE subject LIKE 'user:%' AND subject NOT LIKE '% ip:%';
