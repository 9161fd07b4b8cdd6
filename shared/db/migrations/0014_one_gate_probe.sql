-- The strict gate asks logs_open_group_idx alone (services/poller/claims.py, STRICT_GATE): one probe of
-- a candidate's group answers both "an earlier open log" and "one in flight". The second index, on the
-- PROCESSING rows alone, let the planner join every candidate with every in-flight row whenever its
-- statistics still counted none in flight; nothing reads it now, and each claim and outcome wrote it.
DROP INDEX IF EXISTS logs_processing_group_idx;
