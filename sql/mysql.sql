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
	batch_id BIGINT,
	PRIMARY KEY (oid)
);

CREATE INDEX IF NOT EXISTS ix_object_score_batch_id ON object_score (batch_id);

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

CREATE INDEX IF NOT EXISTS ix_sensor_anomaly_window_end ON sensor_anomaly (window_end);

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

CREATE TABLE IF NOT EXISTS alert (
	alert_id VARCHAR(255) NOT NULL,
	fingerprint VARCHAR(255),
	rule VARCHAR(255),
	alertname VARCHAR(255),
	severity VARCHAR(255),
	labels TEXT,
	annotations TEXT,
	state VARCHAR(255),
	active_at DATETIME,
	starts_at DATETIME,
	ends_at DATETIME,
	updated_at DATETIME,
	value DOUBLE,
	keep_firing_since DATETIME,
	silenced_by TEXT,
	inhibited_by TEXT,
	acked_by VARCHAR(255),
	acked_at DATETIME,
	PRIMARY KEY (alert_id)
);

CREATE INDEX IF NOT EXISTS ix_alert_fingerprint ON alert (fingerprint);

CREATE INDEX IF NOT EXISTS ix_alert_state ON alert (state);

CREATE INDEX IF NOT EXISTS ix_alert_updated_at ON alert (updated_at);

CREATE TABLE IF NOT EXISTS silence (
	silence_id VARCHAR(255) NOT NULL,
	matchers TEXT,
	starts_at DATETIME,
	ends_at DATETIME,
	created_by VARCHAR(255),
	comment TEXT,
	created_at DATETIME,
	PRIMARY KEY (silence_id)
);

CREATE TABLE IF NOT EXISTS alert_notification (
	notification_id VARCHAR(255) NOT NULL,
	channel VARCHAR(255),
	target VARCHAR(255),
	group_key VARCHAR(255),
	payload TEXT,
	status VARCHAR(255),
	attempts INTEGER,
	error TEXT,
	created_at DATETIME,
	sent_at DATETIME,
	PRIMARY KEY (notification_id)
);

CREATE INDEX IF NOT EXISTS ix_alert_notification_status ON alert_notification (status);

CREATE TABLE IF NOT EXISTS alert_group (
	group_key VARCHAR(255) NOT NULL,
	firing TEXT,
	resolved TEXT,
	notified_at DATETIME,
	PRIMARY KEY (group_key)
);

CREATE TABLE IF NOT EXISTS alert_action (
	action_id VARCHAR(255) NOT NULL,
	alert_id VARCHAR(255),
	fingerprint VARCHAR(255),
	action_name VARCHAR(255),
	action_type VARCHAR(255),
	target VARCHAR(255),
	channel VARCHAR(255),
	payload TEXT,
	status VARCHAR(255),
	attempts INTEGER,
	error TEXT,
	created_at DATETIME,
	sent_at DATETIME,
	acked_by VARCHAR(255),
	acked_at DATETIME,
	PRIMARY KEY (action_id)
);

CREATE INDEX IF NOT EXISTS ix_alert_action_alert_id ON alert_action (alert_id);

CREATE INDEX IF NOT EXISTS ix_alert_action_status ON alert_action (status);

CREATE TABLE IF NOT EXISTS alert_cursor (
	source VARCHAR(255) NOT NULL,
	position BIGINT,
	updated_at DATETIME,
	PRIMARY KEY (source)
);
