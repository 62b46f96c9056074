package soads.jvm;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.spark.api.java.function.FlatMapGroupsWithStateFunction;
import org.apache.spark.api.java.function.MapFunction;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.streaming.GroupState;
import org.apache.spark.sql.streaming.GroupStateTimeout;
import org.apache.spark.sql.streaming.OutputMode;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;

/**
 * The Relational Dependency Updater's per-oid step on the JVM (flatMapGroupsWithState).
 *
 * <p>A line-for-line port of soads.streaming.step / object_updates (the Python oracle; the
 * tests compare both on random inputs and through Spark). Why a JVM operator at all: a Python
 * state function pays a fixed cost per key and micro-batch (0.2-1 ms measured, soads bench
 * stream), and a micro-batch of 100,000 reads touches thousands of objects; here a key costs
 * microseconds. The late/out-of-order policy, sessions, dwell de-duplication and eviction are
 * those of the soads/streaming.py docstring.
 *
 * <p>Input rows: oid string, read_point string, time_us long, source string (and the
 * watermark column, which is not read). Output rows: see {@link #OUTPUT}.
 */
public final class RelationUpdater {

  private RelationUpdater() {}

  public static final String KIND_RELATION = "relation";
  public static final String KIND_LATE = "late";
  public static final String KIND_OBJECT = "object";

  /** kind, oid, a, b, freq, support, read_point, time_us, source, sequence, last_us. */
  public static final StructType OUTPUT = new StructType(new StructField[] {
    DataTypes.createStructField("kind", DataTypes.StringType, false),
    DataTypes.createStructField("oid", DataTypes.StringType, true),
    DataTypes.createStructField("a", DataTypes.StringType, true),
    DataTypes.createStructField("b", DataTypes.StringType, true),
    DataTypes.createStructField("freq", DataTypes.LongType, true),
    DataTypes.createStructField("support", DataTypes.LongType, true),
    DataTypes.createStructField("read_point", DataTypes.StringType, true),
    DataTypes.createStructField("time_us", DataTypes.LongType, true),
    DataTypes.createStructField("source", DataTypes.StringType, true),
    DataTypes.createStructField("sequence",
        DataTypes.createArrayType(DataTypes.StringType, true), true),
    DataTypes.createStructField("last_us", DataTypes.LongType, true),
  });

  /** Per-oid state (a Java bean: Spark's bean encoder stores it in the state store). */
  public static final class ObjectState implements Serializable {
    private String readPoint;
    private long timeUs;
    private List<String> visits = new ArrayList<>();
    private List<String> seenA = new ArrayList<>();
    private List<String> seenB = new ArrayList<>();

    public ObjectState() {}

    public String getReadPoint() { return readPoint; }
    public void setReadPoint(String v) { readPoint = v; }
    public long getTimeUs() { return timeUs; }
    public void setTimeUs(long v) { timeUs = v; }
    public List<String> getVisits() { return visits; }
    public void setVisits(List<String> v) { visits = v; }
    public List<String> getSeenA() { return seenA; }
    public void setSeenA(List<String> v) { seenA = v; }
    public List<String> getSeenB() { return seenB; }
    public void setSeenB(List<String> v) { seenB = v; }
  }

  /** One read: read point, event time (µs), source identity. */
  public static final class Read {
    final String readPoint;
    final long timeUs;
    final String source;
    final String arrivalPrefix;
    final String arrivalNumber;  // digits without leading zeros ("" = 0)

    public Read(String readPoint, long timeUs, String source) {
      this.readPoint = readPoint;
      this.timeUs = timeUs;
      this.source = source;
      String s = source == null ? "" : source;
      Matcher m = ARRIVAL.matcher(s);
      if (m.matches()) {
        arrivalPrefix = m.group(1);
        arrivalNumber = m.group(2).replaceFirst("^0+", "");
      } else {
        arrivalPrefix = s;
        arrivalNumber = "";
      }
    }
  }

  // soads.sequences.arrival_key: "file:line", "file#index", "topic/partition/offset"
  private static final Pattern ARRIVAL = Pattern.compile("^(.*?)[:#/](\\d+)$", Pattern.DOTALL);

  /** Python str ordering: by code point (String.compareTo orders UTF-16 units). */
  static int compareCodePoints(String x, String y) {
    int i = 0;
    int j = 0;
    while (i < x.length() && j < y.length()) {
      int a = x.codePointAt(i);
      int b = y.codePointAt(j);
      if (a != b) {
        return Integer.compare(a, b);
      }
      i += Character.charCount(a);
      j += Character.charCount(b);
    }
    return Integer.compare(x.length() - i, y.length() - j);
  }

  /** (time, arrival_key) order of soads.streaming.step; arrival numbers of any length. */
  static final Comparator<Read> ORDER = (r, s) -> {
    int c = Long.compare(r.timeUs, s.timeUs);
    if (c != 0) return c;
    c = compareCodePoints(r.arrivalPrefix, s.arrivalPrefix);
    if (c != 0) return c;
    c = Integer.compare(r.arrivalNumber.length(), s.arrivalNumber.length());
    return c != 0 ? c : r.arrivalNumber.compareTo(s.arrivalNumber);
  };

  /** What one step found (soads.streaming.StepOut). */
  public static final class StepOut {
    public final List<String[]> relations = new ArrayList<>();
    public final List<String[]> newSupport = new ArrayList<>();
    public final List<Read> late = new ArrayList<>();
    public boolean changed = false;
  }

  /**
   * soads.streaming.step: one micro-batch of one object. Returns the new state (null when
   * there is none) and fills {@code out}.
   */
  public static ObjectState step(ObjectState state, List<Read> reads, long watermarkUs,
                                 long dwellUs, long idleUs, int maxVisits, StepOut out) {
    Long prevTime = state == null ? null : state.timeUs;
    List<Read> ordered = new ArrayList<>(reads);
    ordered.sort(ORDER);
    Set<List<String>> seen = null;
    for (Read r : ordered) {
      if (r.timeUs < watermarkUs || (prevTime != null && r.timeUs <= prevTime)) {
        out.late.add(r);
        continue;
      }
      out.changed = true;
      if (state == null || r.timeUs - state.timeUs > idleUs) {
        // a new session: no relation across the gap, support counts again
        state = new ObjectState();
        state.readPoint = r.readPoint;
        state.timeUs = r.timeUs;
        state.visits.add(r.readPoint);
        seen = new HashSet<>();
        continue;
      }
      if (seen == null) {
        seen = new HashSet<>();
        for (int k = 0; k < state.seenA.size(); k++) {
          seen.add(List.of(state.seenA.get(k), state.seenB.get(k)));
        }
      }
      // soads.dependencies.advance: a repeat of the last read point within the dwell window
      // is the same visit
      if (r.readPoint.equals(state.readPoint) && r.timeUs - state.timeUs <= dwellUs) {
        state.timeUs = r.timeUs;
        continue;
      }
      String[] rel = {state.readPoint, r.readPoint};
      out.relations.add(rel);
      state.visits.add(r.readPoint);
      if (state.visits.size() > maxVisits) {
        state.visits = new ArrayList<>(
            state.visits.subList(state.visits.size() - maxVisits, state.visits.size()));
      }
      if (seen.add(List.of(rel[0], rel[1]))) {
        out.newSupport.add(rel);
        state.seenA.add(rel[0]);
        state.seenB.add(rel[1]);
      }
      state.readPoint = r.readPoint;
      state.timeUs = r.timeUs;
    }
    return state;
  }

  /** The rows of one object's step (soads.streaming._update_frame). */
  public static List<Row> rows(String oid, ObjectState st, StepOut out) {
    Map<List<String>, long[]> freq = new TreeMap<>((x, y) -> {
      int c = compareCodePoints(x.get(0), y.get(0));
      return c != 0 ? c : compareCodePoints(x.get(1), y.get(1));
    });
    for (String[] rel : out.relations) {
      freq.computeIfAbsent(List.of(rel[0], rel[1]), k -> new long[2])[0] += 1;
    }
    for (String[] rel : out.newSupport) {
      freq.get(List.of(rel[0], rel[1]))[1] = 1;
    }
    List<Row> rows = new ArrayList<>(freq.size() + out.late.size() + 1);
    for (Map.Entry<List<String>, long[]> e : freq.entrySet()) {
      rows.add(RowFactory.create(KIND_RELATION, oid, e.getKey().get(0), e.getKey().get(1),
          e.getValue()[0], e.getValue()[1], null, null, null, null, null));
    }
    for (Read r : out.late) {
      rows.add(RowFactory.create(KIND_LATE, oid, null, null, null, null, r.readPoint, r.timeUs,
          r.source, null, null));
    }
    if (out.changed && st != null) {
      rows.add(RowFactory.create(KIND_OBJECT, oid, null, null, null, null, null, null, null,
          scala.jdk.javaapi.CollectionConverters.asScala(new ArrayList<>(st.visits)).toSeq(),
          st.timeUs));
    }
    return rows;
  }

  /** ceil(x / y) for y > 0. */
  static long ceilDiv(long x, long y) {
    return -Math.floorDiv(-x, y);
  }

  /**
   * soads.streaming.object_updates on the JVM: group the prepared reads by oid and run the
   * step with per-oid state and an event-time timeout.
   *
   * @param reads oid, read_point, time_us, source, plus the watermark column the Python side
   *     attaches (the policy records late reads instead of letting Spark drop them)
   */
  public static Dataset<Row> apply(Dataset<Row> reads, double dwellSeconds, double idleSeconds,
                                   int maxVisits) {
    final long dwellUs = (long) (dwellSeconds * 1_000_000);
    final long idleUs = (long) (idleSeconds * 1_000_000);
    final int iOid = reads.schema().fieldIndex("oid");
    final int iRp = reads.schema().fieldIndex("read_point");
    final int iT = reads.schema().fieldIndex("time_us");
    final int iSrc = reads.schema().fieldIndex("source");
    FlatMapGroupsWithStateFunction<String, Row, ObjectState, Row> fn =
        (String oid, Iterator<Row> it, GroupState<ObjectState> state) -> {
          if (state.hasTimedOut()) {
            // the watermark passed last read + idle: the object is finished (scored already)
            state.remove();
            return java.util.Collections.emptyIterator();
          }
          long watermarkUs = state.getCurrentWatermarkMs() * 1000;
          ObjectState current = state.exists() ? state.get() : null;
          List<Read> batch = new ArrayList<>();
          while (it.hasNext()) {
            Row r = it.next();
            batch.add(new Read(r.getString(iRp), r.getLong(iT), r.getString(iSrc)));
          }
          StepOut out = new StepOut();
          ObjectState next = step(current, batch, watermarkUs, dwellUs, idleUs, maxVisits, out);
          if (next == null || watermarkUs > next.timeUs + idleUs) {
            if (state.exists()) {
              state.remove();
            }
          } else {
            state.update(next);
            state.setTimeoutTimestamp(ceilDiv(next.timeUs + idleUs, 1000));
          }
          return rows(oid, next, out).iterator();
        };
    return reads
        .groupByKey((MapFunction<Row, String>) r -> r.getString(iOid), Encoders.STRING())
        .flatMapGroupsWithState(fn, OutputMode.Append(), Encoders.bean(ObjectState.class),
            Encoders.row(OUTPUT), GroupStateTimeout.EventTimeTimeout());
  }

  /**
   * soads.streaming.combine_relations on the JVM: the relation rows of {@link #apply} summed by
   * (a, b) within each partition (oid null); late and object rows pass through. A micro-batch
   * then hands the driver about partitions x distinct relations relation rows instead of one per
   * object and relation, without a round trip through a Python worker.
   */
  public static Dataset<Row> combineRelations(Dataset<Row> updates) {
    MapPartitionsFunction<Row, Row> fn = it -> {
      Map<List<String>, long[]> sums = new TreeMap<>((x, y) -> {
        int c = compareCodePoints(x.get(0), y.get(0));
        return c != 0 ? c : compareCodePoints(x.get(1), y.get(1));
      });
      List<Row> out = new ArrayList<>();
      while (it.hasNext()) {
        Row r = it.next();
        if (KIND_RELATION.equals(r.getString(0))) {
          long[] acc = sums.computeIfAbsent(List.of(r.getString(2), r.getString(3)),
              k -> new long[2]);
          acc[0] += r.getLong(4);
          acc[1] += r.getLong(5);
        } else {
          out.add(r);
        }
      }
      for (Map.Entry<List<String>, long[]> e : sums.entrySet()) {
        out.add(RowFactory.create(KIND_RELATION, null, e.getKey().get(0), e.getKey().get(1),
            e.getValue()[0], e.getValue()[1], null, null, null, null, null));
      }
      return out.iterator();
    };
    return updates.mapPartitions(fn, Encoders.row(OUTPUT));
  }

  /**
   * The step on plain arrays, for the tests' comparison with the Python oracle (py4j).
   * Returns [state or null, relations, newSupport, late sources, changed].
   */
  public static Object[] stepForTest(String stateRp, long stateTimeUs, String[] stateVisits,
                                     String[] seenA, String[] seenB, String[] rps, long[] times,
                                     String[] sources, long watermarkUs, long dwellUs,
                                     long idleUs, int maxVisits) {
    ObjectState st = null;
    if (stateRp != null) {
      st = new ObjectState();
      st.readPoint = stateRp;
      st.timeUs = stateTimeUs;
      st.visits = new ArrayList<>(List.of(stateVisits));
      st.seenA = new ArrayList<>(List.of(seenA));
      st.seenB = new ArrayList<>(List.of(seenB));
    }
    List<Read> reads = new ArrayList<>();
    for (int k = 0; k < rps.length; k++) {
      reads.add(new Read(rps[k], times[k], sources[k]));
    }
    StepOut out = new StepOut();
    ObjectState next = step(st, reads, watermarkUs, dwellUs, idleUs, maxVisits, out);
    String[] late = new String[out.late.size()];
    for (int k = 0; k < late.length; k++) {
      late[k] = out.late.get(k).source;
    }
    String[] rel = new String[out.relations.size()];
    for (int k = 0; k < rel.length; k++) {
      rel[k] = out.relations.get(k)[0] + "\u0000" + out.relations.get(k)[1];
    }
    String[] sup = new String[out.newSupport.size()];
    for (int k = 0; k < sup.length; k++) {
      sup[k] = out.newSupport.get(k)[0] + "\u0000" + out.newSupport.get(k)[1];
    }
    String[] nextState = next == null ? null : new String[] {
        next.readPoint, Long.toString(next.timeUs), String.join("\u0000", next.visits)};
    return new Object[] {nextState, rel, sup, late, out.changed};
  }
}
