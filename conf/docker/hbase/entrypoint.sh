#!/bin/sh
# Start HBase (master + region server + ZooKeeper) and its Thrift server as `make up` does, then
# stay in the foreground while both run; `docker stop` stops them cleanly.
set -e
CONF="--conf conf/services.toml --conf conf/docker/hbase/hbase.toml"
trap 'python -m soads.services down hbase $CONF; exit 0' TERM INT
python -m soads.services up hbase $CONF
RUN=/data/services/hbase/run
while kill -0 "$(cat $RUN/master.pid)" 2>/dev/null && kill -0 "$(cat $RUN/thrift.pid)" 2>/dev/null; do
  sleep 5 & wait $!
done
echo "HBase stopped; last lines of its log:" >&2
tail -n 50 /data/services/hbase/logs/master.log >&2
exit 1
