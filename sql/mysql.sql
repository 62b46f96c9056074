-- SOADS tables (mysql). Generated from soads/schema.py by `python -m soads.storage.ddl mysql`;
-- tests/test_storage.py checks this file is current.

CREATE TABLE IF NOT EXISTS relational_dependency (
	a VARCHAR(255) NOT NULL,
	b VARCHAR(255) NOT NULL,
	freq BIGINT,
	support BIGINT,
	PRIMARY KEY (a, b)
);

CREATE TABLE IF NOT EXISTS mining_run (
	run_id VARCHAR(255) NOT NULL,
	algorithm VARCHAR(255),
	minsup BIGINT,
	max_length INTEGER,
	n_sequences BIGINT,
	n_patterns BIGINT,
	seconds DOUBLE,
	created_at DATETIME,
	PRIMARY KEY (run_id)
);

CREATE TABLE IF NOT EXISTS pattern (
	run_id VARCHAR(255) NOT NULL,
	pattern_id INTEGER NOT NULL,
	pattern TEXT,
	support BIGINT,
	length INTEGER,
	maximal BOOL,
	PRIMARY KEY (run_id, pattern_id)
);

CREATE TABLE IF NOT EXISTS object_score (
	oid VARCHAR(255) NOT NULL,
	score DOUBLE,
	raw DOUBLE,
	pattern TEXT,
	surprisal DOUBLE,
	last_time DATETIME,
	run_id VARCHAR(255),
	anomaly DOUBLE,
	is_anomaly BOOL,
	explanation TEXT,
	model_run_id VARCHAR(255),
	PRIMARY KEY (oid)
);

CREATE INDEX IF NOT EXISTS ix_object_score_run_id_last_time ON object_score (run_id, last_time);

CREATE TABLE IF NOT EXISTS alignment_score (
	window_start DATETIME NOT NULL,
	window_end DATETIME,
	mean_score DOUBLE,
	n_objects BIGINT,
	run_id VARCHAR(255) NOT NULL,
	PRIMARY KEY (window_start, run_id)
);

CREATE TABLE IF NOT EXISTS detector_run (
	run_id VARCHAR(255) NOT NULL,
	created_at DATETIME,
	n_objects BIGINT,
	n_rows BIGINT,
	skipped TEXT,
	conf TEXT,
	seconds DOUBLE,
	horizon DATETIME,
	PRIMARY KEY (run_id)
);

CREATE TABLE IF NOT EXISTS detector_count (
	run_id VARCHAR(255) NOT NULL,
	row_id BIGINT NOT NULL,
	feature VARCHAR(255),
	ctx_order INTEGER,
	context TEXT,
	value TEXT,
	count BIGINT,
	PRIMARY KEY (run_id, row_id)
);

CREATE TABLE IF NOT EXISTS anomaly_rate (
	window_start DATETIME NOT NULL,
	window_end DATETIME,
	read_point VARCHAR(255) NOT NULL,
	n_objects BIGINT,
	flagged BIGINT,
	rate DOUBLE,
	model_run_id VARCHAR(255) NOT NULL,
	writer VARCHAR(255) NOT NULL,
	PRIMARY KEY (window_start, read_point, model_run_id, writer)
);

CREATE TABLE IF NOT EXISTS sink_batch (
	sink VARCHAR(255) NOT NULL,
	batch_id BIGINT NOT NULL,
	created_at DATETIME,
	PRIMARY KEY (sink, batch_id)
);

CREATE TABLE IF NOT EXISTS late_event (
	oid VARCHAR(255) NOT NULL,
	source VARCHAR(255) NOT NULL,
	read_point VARCHAR(255),
	event_time DATETIME,
	PRIMARY KEY (oid, source)
);

CREATE TABLE IF NOT EXISTS sensor_anomaly (
	machine_id VARCHAR(255) NOT NULL,
	window_end DATETIME NOT NULL,
	score DOUBLE,
	threshold DOUBLE,
	is_anomaly BOOL,
	model_version VARCHAR(255),
	PRIMARY KEY (machine_id, window_end)
);

CREATE TABLE IF NOT EXISTS sensor_drift (
	model_version VARCHAR(255) NOT NULL,
	window_start DATETIME NOT NULL,
	window_end DATETIME,
	n_windows BIGINT,
	jsd DOUBLE,
	drifted BOOL,
	PRIMARY KEY (model_version, window_start)
);

CREATE TABLE IF NOT EXISTS sensor_quarantine (
	source VARCHAR(255) NOT NULL,
	machine_id VARCHAR(255),
	ts DATETIME,
	reason VARCHAR(255),
	detail VARCHAR(255),
	PRIMARY KEY (source)
);
