-- Seeds one violation of every in-database control (run as the superuser, over the socket):
--   scripts/postgres/seed DIR
-- Databases: postgres (clean but no pgaudit), app (every per-database violation), reports
-- (no pgaudit extension, PUBLIC may create in public).
CREATE ROLE appadmin LOGIN PASSWORD 'appadmin-password' IN ROLE rds_superuser;
CREATE ROLE nested LOGIN PASSWORD 'nested-password' IN ROLE appadmin;   -- indirect rds_superuser
CREATE ROLE app_user LOGIN PASSWORD 'app-password';
ALTER ROLE app_user SET log_statement = 'all';                          -- leaks passwords into logs
SET password_encryption = 'md5';
CREATE ROLE legacy LOGIN PASSWORD 'legacy-password';                    -- md5 hash
RESET password_encryption;
CREATE DATABASE app;
CREATE DATABASE reports;
ALTER DATABASE reports SET pgaudit.log = 'none';                         -- silences pgaudit
\connect app
GRANT CREATE ON SCHEMA public TO PUBLIC;                                 -- PG 14 and older default
CREATE EXTENSION pgaudit;
CREATE FUNCTION public.bad_definer() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 1';
ALTER FUNCTION public.bad_definer() OWNER TO appadmin;
CREATE FUNCTION public.good_definer() RETURNS int LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp AS 'SELECT 1';
CREATE FUNCTION public.suspicious_fn() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END';
CREATE EVENT TRIGGER suspicious ON ddl_command_end EXECUTE FUNCTION public.suspicious_fn();
\connect reports
GRANT CREATE ON SCHEMA public TO PUBLIC;
\connect postgres
ALTER ROLE app_user SET work_mem = '8MB';                                -- harmless: kept by Enforce
