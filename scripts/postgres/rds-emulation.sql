-- EMULATION of objects that exist only on Amazon RDS / Aurora PostgreSQL, so the in-database
-- layer can be tested on a vanilla PostgreSQL. Not for production. On RDS these exist already:
--   rds_superuser  the role the master user belongs to (RDS has no real superuser for customers)
--   rds_iam        members may log in only with IAM tokens
--   rds_tools.role_password_encryption_type()  who has md5 or SCRAM hashes (pg_authid is not
--                  readable by rds_superuser on RDS)
-- rds_pgaudit is NOT created here: on RDS it exists only once a customer creates it for
-- pgaudit.role (the seeded test databases rely on its absence).
CREATE ROLE rds_superuser NOLOGIN;
CREATE ROLE rds_iam NOLOGIN;
CREATE SCHEMA rds_tools;
CREATE FUNCTION rds_tools.role_password_encryption_type()
RETURNS TABLE (rolname name, encryption_type text) LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
  SELECT a.rolname, CASE WHEN a.rolpassword LIKE 'md5%' THEN 'md5'
                         WHEN a.rolpassword LIKE 'SCRAM-SHA-256$%' THEN 'scram-sha-256' END
  FROM pg_authid a $$;
REVOKE ALL ON FUNCTION rds_tools.role_password_encryption_type() FROM PUBLIC;
GRANT USAGE ON SCHEMA rds_tools TO rds_superuser;
GRANT EXECUTE ON FUNCTION rds_tools.role_password_encryption_type() TO rds_superuser;

-- The least-privilege audit role documented in the README: it logs in, reads pg_stat_ssl of
-- every session (pg_monitor) and the hash types; it owns nothing and holds no write right.
CREATE ROLE pgbaseline_auditor LOGIN PASSWORD 'auditor-password' IN ROLE pg_monitor;
GRANT USAGE ON SCHEMA rds_tools TO pgbaseline_auditor;
GRANT EXECUTE ON FUNCTION rds_tools.role_password_encryption_type() TO pgbaseline_auditor;
-- The plaintext client (pg_hba lets only this role in without TLS).
CREATE ROLE plaintext_client LOGIN PASSWORD 'plaintext-password';
