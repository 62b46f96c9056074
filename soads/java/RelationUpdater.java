package soads.jvm;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Set;
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

import scala.Tuple2;

/**
 * The Relational Dependency Updater's per-oid step on the JVM (flatMapGroupsWithState).
 *
 * <p>A line-for-line port of soads.stream.state.step / object_updates (the Python oracle; the
 * tests compare both on random inputs and through Spark). Why a JVM operator at all: a Python
 * state function pays a fixed cost per key and micro-batch (0.2-1 ms measured, soads bench
 * stream), and a micro-batch of 100,000 reads touches thousands of objects; here a key costs
 * microseconds. The late/out-of-order policy, sessions, dwell de-duplication and eviction are
 * those of the soads/stream/state.py docstring.
 *
 * <p>Input rows: oid string, read_point string, time_us long, source string, the visit
 * attribute columns (strings, null when absent; their names are passed to {@link #apply}) and
 * the watermark column, which is not read. Output rows: see {@link #OUTPUT}.
 */
public final class RelationUpdater {

  private RelationUpdater() {}

  // row kinds and column names: the same strings as soads/schema.py (KIND_RELATION, ...,
  // TIME_US, LAST_US); OUTPUT is soads.stream.state.update_struct() (a test compares the rows)
  public static final String KIND_RELATION = "relation";
  public static final String KIND_LATE = "late";
  public static final String KIND_OBJECT = "object";

  /**
   * kind, oid, a, b, freq, support, read_point, time_us, source, sequence, last_us,
   * attributes (one encoded string per visit), closed.
   */
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
    // one string per visit (soads.stream.state.encode_attributes, made by the parse stage and
    // kept as it is): a string per visit costs the state, the Arrow hand-over and the score
    // stage far less than a map per visit
    DataTypes.createStructField("attributes",
        DataTypes.createArrayType(DataTypes.StringType, true), true),
    DataTypes.createStructField("closed", DataTypes.BooleanType, true),
  });

  /** A read or visit without attributes (soads.stream.state.encode_attributes of {}). */
  private static final String NO_ATTRIBUTE = "";

  /**
   * Per-oid state. The state store holds it as bytes ({@link #toBytes}, Encoders.BINARY): a bean
   * encoder of three string lists generated ~100 KB of projection code per task and micro-batch
   * (half the executor time of a 2,000 events/s micro-batch, JFR); a byte array's is trivial.
   */
  public static final class ObjectState implements Serializable {
    /**
     * The first byte of {@link #toBytes}; a change of layout takes a new number (2: the
     * visits' attributes; 3: each visit's attributes as one encoded string).
     */
    static final byte FORMAT = 3;

    String readPoint;
    long timeUs;
    List<String> visits = new ArrayList<>();
    /**
     * Per visit, the attributes of its first read, as the read brought them (the parse stage's
     * soads.stream.state.encode_attributes string, opaque here): not rebuilt for every
     * micro-batch that writes the object's row.
     */
    List<String> attributes = new ArrayList<>();
    List<String> seenA = new ArrayList<>();
    List<String> seenB = new ArrayList<>();

    public ObjectState() {}

    public byte[] toBytes() {
      try {
        java.io.ByteArrayOutputStream buf = new java.io.ByteArrayOutputStream(
            64 + 24 * (visits.size() + 2 * seenA.size()));
        java.io.DataOutputStream out = new java.io.DataOutputStream(buf);
        out.writeByte(FORMAT);
        writeString(out, readPoint);
        out.writeLong(timeUs);
        out.writeInt(visits.size());
        for (String v : visits) {
          writeString(out, v);
        }
        out.writeInt(seenA.size());
        for (int k = 0; k < seenA.size(); k++) {
          writeString(out, seenA.get(k));
          writeString(out, seenB.get(k));
        }
        out.writeInt(attributes.size());
        for (String a : attributes) {
          writeString(out, a);
        }
        out.flush();
        return buf.toByteArray();
      } catch (java.io.IOException e) {
        throw new java.io.UncheckedIOException(e);
      }
    }

    public static ObjectState fromBytes(byte[] bytes) {
      try {
        java.io.DataInputStream in = new java.io.DataInputStream(
            new java.io.ByteArrayInputStream(bytes));
        byte format = in.readByte();
        if (format != FORMAT) {
          throw new IllegalStateException("object state format " + format + " is not "
              + FORMAT + ": the checkpoint was written by another version of soads");
        }
        ObjectState st = new ObjectState();
        st.readPoint = readString(in);
        st.timeUs = in.readLong();
        int n = in.readInt();
        st.visits = new ArrayList<>(n + 1);
        for (int k = 0; k < n; k++) {
          st.visits.add(readString(in));
        }
        n = in.readInt();
        st.seenA = new ArrayList<>(n + 1);
        st.seenB = new ArrayList<>(n + 1);
        for (int k = 0; k < n; k++) {
          st.seenA.add(readString(in));
          st.seenB.add(readString(in));
        }
        n = in.readInt();
        st.attributes = new ArrayList<>(n + 1);
        for (int k = 0; k < n; k++) {
          st.attributes.add(readString(in));
        }
        return st;
      } catch (java.io.IOException e) {
        throw new java.io.UncheckedIOException(e);
      }
    }

    // length-prefixed UTF-8 (DataOutput.writeUTF stops at 64 KB and alters NUL)
    private static void writeString(java.io.DataOutputStream out, String s)
        throws java.io.IOException {
      byte[] b = s.getBytes(java.nio.charset.StandardCharsets.UTF_8);
      out.writeInt(b.length);
      out.write(b);
    }

    private static String readString(java.io.DataInputStream in) throws java.io.IOException {
      byte[] b = new byte[in.readInt()];
      in.readFully(b);
      return new String(b, java.nio.charset.StandardCharsets.UTF_8);
    }
  }

  /** One read: read point, event time (µs), source identity, attributes (encoded). */
  public static final class Read {
    final String readPoint;
    final long timeUs;
    final String source;
    final String attributes;
    private String arrivalPrefix;  // parsed on first use: only reads with equal times need it
    private String arrivalNumber;  // digits without leading zeros ("" = 0)

    public Read(String readPoint, long timeUs, String source, String attributes) {
      this.readPoint = readPoint;
      this.timeUs = timeUs;
      this.source = source;
      this.attributes = attributes == null ? NO_ATTRIBUTE : attributes;
    }

    private void parseArrival() {
      String s = source == null ? "" : source;
      Matcher m = ARRIVAL.matcher(s);
      if (m.matches()) {
        String digits = m.group(2);
        int k = 0;
        while (k < digits.length() && digits.charAt(k) == '0') {
          k++;
        }
        arrivalNumber = digits.substring(k);
        arrivalPrefix = m.group(1);
      } else {
        arrivalNumber = "";
        arrivalPrefix = s;
      }
    }

    String arrivalPrefix() {
      if (arrivalPrefix == null) {
        parseArrival();
      }
      return arrivalPrefix;
    }

    String arrivalNumber() {
      if (arrivalNumber == null) {
        parseArrival();
      }
      return arrivalNumber;
    }
  }

  // soads.sequences.arrival_key: "file:line", "file#index", "topic/partition/offset"
  private static final Pattern ARRIVAL = Pattern.compile("^(.*?)[:#/](\\d+)$", Pattern.DOTALL);

  /**
   * Python str ordering: by code point. String.compareTo orders UTF-16 units, which differs only
   * where a surrogate (a code point above U+FFFF) meets a unit in U+E000-U+FFFF: shift those two
   * ranges past each other at the first difference (the usual code-point-order fix-up).
   */
  static int compareCodePoints(String x, String y) {
    int n = Math.min(x.length(), y.length());
    for (int i = 0; i < n; i++) {
      char a = x.charAt(i);
      char b = y.charAt(i);
      if (a != b) {
        if (a >= 0xD800 && b >= 0xD800) {
          a += (a >= 0xE000) ? -0x800 : 0x2000;
          b += (b >= 0xE000) ? -0x800 : 0x2000;
        }
        return Integer.compare(a, b);
      }
    }
    return Integer.compare(x.length(), y.length());
  }

  /** (time, arrival_key) order of soads.stream.state.step; arrival numbers of any length. */
  static final Comparator<Read> ORDER = (r, s) -> {
    int c = Long.compare(r.timeUs, s.timeUs);
    if (c != 0) return c;
    c = compareCodePoints(r.arrivalPrefix(), s.arrivalPrefix());
    if (c != 0) return c;
    c = Integer.compare(r.arrivalNumber().length(), s.arrivalNumber().length());
    return c != 0 ? c : r.arrivalNumber().compareTo(s.arrivalNumber());
  };

  /** A relation (a, b) as a map key. */
  record Pair(String a, String b) {}

  static final Comparator<Pair> PAIR_ORDER = (x, y) -> {
    int c = compareCodePoints(x.a(), y.a());
    return c != 0 ? c : compareCodePoints(x.b(), y.b());
  };

  /** What one step found (soads.stream.state.StepOut). */
  public static final class StepOut {
    public final List<String[]> relations = new ArrayList<>();
    public final List<String[]> newSupport = new ArrayList<>();
    public final List<Read> late = new ArrayList<>();
    public boolean changed = false;
  }

  /**
   * soads.stream.state.step: one micro-batch of one object. Returns the new state (null when
   * there is none) and fills {@code out}.
   */
  public static ObjectState step(ObjectState state, List<Read> reads, long watermarkUs,
                                 long dwellUs, long idleUs, int maxVisits, StepOut out) {
    Long prevTime = state == null ? null : state.timeUs;
    List<Read> ordered = new ArrayList<>(reads);
    ordered.sort(ORDER);
    Set<Pair> seen = null;
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
        state.attributes.add(r.attributes);
        seen = new HashSet<>();
        continue;
      }
      if (seen == null) {
        seen = new HashSet<>();
        for (int k = 0; k < state.seenA.size(); k++) {
          seen.add(new Pair(state.seenA.get(k), state.seenB.get(k)));
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
      state.attributes.add(r.attributes);
      if (state.visits.size() > maxVisits) {
        state.visits = new ArrayList<>(
            state.visits.subList(state.visits.size() - maxVisits, state.visits.size()));
        state.attributes = new ArrayList<>(state.attributes.subList(
            state.attributes.size() - maxVisits, state.attributes.size()));
      }
      if (seen.add(new Pair(rel[0], rel[1]))) {
        out.newSupport.add(rel);
        state.seenA.add(rel[0]);
        state.seenB.add(rel[1]);
      }
      state.readPoint = r.readPoint;
      state.timeUs = r.timeUs;
    }
    return state;
  }

  /**
   * The rows of one object's step (soads.stream.state._update_frame); {@code closed}: the state
   * evicts the object, whose final object row is written even if the step changed nothing.
   */
  public static List<Row> rows(String oid, ObjectState st, StepOut out, boolean closed) {
    Map<Pair, long[]> freq = new HashMap<>();
    for (String[] rel : out.relations) {
      freq.computeIfAbsent(new Pair(rel[0], rel[1]), k -> new long[2])[0] += 1;
    }
    for (String[] rel : out.newSupport) {
      freq.get(new Pair(rel[0], rel[1]))[1] = 1;
    }
    List<Pair> keys = new ArrayList<>(freq.keySet());
    keys.sort(PAIR_ORDER);
    List<Row> rows = new ArrayList<>(keys.size() + out.late.size() + 1);
    for (Pair k : keys) {
      long[] v = freq.get(k);
      rows.add(RowFactory.create(KIND_RELATION, oid, k.a(), k.b(), v[0], v[1], null, null,
          null, null, null, null, null));
    }
    for (Read r : out.late) {
      rows.add(RowFactory.create(KIND_LATE, oid, null, null, null, null, r.readPoint, r.timeUs,
          r.source, null, null, null, null));
    }
    if ((out.changed || closed) && st != null) {
      List<String> maps = new ArrayList<>(st.attributes);
      rows.add(RowFactory.create(KIND_OBJECT, oid, null, null, null, null, null, null, null,
          scala.jdk.javaapi.CollectionConverters.asScala(new ArrayList<>(st.visits)).toSeq(),
          st.timeUs, scala.jdk.javaapi.CollectionConverters.asScala(maps).toSeq(), closed));
    }
    return rows;
  }



  /** ceil(x / y) for y > 0. */
  static long ceilDiv(long x, long y) {
    return -Math.floorDiv(-x, y);
  }

  /**
   * soads.stream.state.object_updates on the JVM: group the prepared reads by oid and run the
   * step with per-oid state and an event-time timeout.
   *
   * @param reads oid, read_point, time_us, source, the attributes column, plus the watermark
   *     column the Python side attaches (the policy records late reads instead of letting Spark
   *     drop them)
   * @param attributesColumn the name of the column holding each read's attributes as one
   *     encoded string (soads.stream.state.encode_attributes; null or "" = none), kept as it
   *     is for the visit the read starts
   */
  public static Dataset<Row> apply(Dataset<Row> reads, double dwellSeconds, double idleSeconds,
                                   int maxVisits, String attributesColumn) {
    final long dwellUs = (long) (dwellSeconds * 1_000_000);
    final long idleUs = (long) (idleSeconds * 1_000_000);
    final int iOid = reads.schema().fieldIndex("oid");
    final int iRp = reads.schema().fieldIndex("read_point");
    final int iT = reads.schema().fieldIndex("time_us");
    final int iSrc = reads.schema().fieldIndex("source");
    final int iAttr = reads.schema().fieldIndex(attributesColumn);
    FlatMapGroupsWithStateFunction<Tuple2<Long, String>, Row, byte[], Row> fn =
        (Tuple2<Long, String> key, Iterator<Row> it, GroupState<byte[]> state) -> {
          String oid = key._2();
          if (state.hasTimedOut()) {
            // the watermark passed last read + idle: the object is finished; its final row is
            // scored closed (its END step counts)
            ObjectState last = ObjectState.fromBytes(state.get());
            state.remove();
            return rows(oid, last, new StepOut(), true).iterator();
          }
          long watermarkUs = state.getCurrentWatermarkMs() * 1000;
          ObjectState current = state.exists() ? ObjectState.fromBytes(state.get()) : null;
          List<Read> batch = new ArrayList<>();
          while (it.hasNext()) {
            Row r = it.next();
            batch.add(new Read(r.getString(iRp), r.getLong(iT), r.getString(iSrc),
                r.isNullAt(iAttr) ? NO_ATTRIBUTE : r.getString(iAttr)));
          }
          StepOut out = new StepOut();
          ObjectState next = step(current, batch, watermarkUs, dwellUs, idleUs, maxVisits, out);
          boolean evicted = next != null && watermarkUs > next.timeUs + idleUs;
          if (next == null || evicted) {
            if (state.exists()) {
              state.remove();
            }
          } else {
            state.update(next.toBytes());
            state.setTimeoutTimestamp(ceilDiv(next.timeUs + idleUs, 1000));
          }
          return rows(oid, next, out, evicted).iterator();
        };
    // The key is (hash of the oid, oid), not the oid alone. The operator sorts each partition by
    // its key, and Spark's sort compares an 8-byte prefix first: oids share long prefixes
    // ("urn:epc:id:sgtin:..."), so on the bare oid almost every comparison fell through to a full
    // string compare. That sort was a quarter of the executor time in soads bench stream's
    // sustained part (JFR). A 64-bit hash prefix settles most comparisons; the oid still
    // separates colliding objects.
    return reads
        .groupByKey((MapFunction<Row, Tuple2<Long, String>>) r -> {
          String oid = r.getString(iOid);
          return new Tuple2<>(mix(oid.hashCode()), oid);
        }, Encoders.tuple(Encoders.LONG(), Encoders.STRING()))
        .flatMapGroupsWithState(fn, OutputMode.Append(), Encoders.BINARY(),
            Encoders.row(OUTPUT), GroupStateTimeout.EventTimeTimeout());
  }

  /** A 32-bit hash spread over 64 bits (MurmurHash3's finalizer), so sort prefixes differ. */
  static long mix(int h) {
    long z = (h & 0xffffffffL) * 0xff51afd7ed558ccdL;
    z = (z ^ (z >>> 33)) * 0xc4ceb9fe1a85ec53L;
    return z ^ (z >>> 33);
  }

  /**
   * soads.stream.state.combine_relations on the JVM: the relation rows of {@link #apply} summed by
   * (a, b) within each partition (oid null); late and object rows pass through. A micro-batch
   * then hands the driver about partitions x distinct relations relation rows instead of one per
   * object and relation, without a round trip through a Python worker.
   */
  public static Dataset<Row> combineRelations(Dataset<Row> updates) {
    MapPartitionsFunction<Row, Row> fn = it -> {
      Map<Pair, long[]> sums = new HashMap<>();
      List<Row> out = new ArrayList<>();
      while (it.hasNext()) {
        Row r = it.next();
        if (KIND_RELATION.equals(r.getString(0))) {
          long[] acc = sums.computeIfAbsent(new Pair(r.getString(2), r.getString(3)),
              k -> new long[2]);
          acc[0] += r.getLong(4);
          acc[1] += r.getLong(5);
        } else {
          out.add(r);
        }
      }
      List<Pair> keys = new ArrayList<>(sums.keySet());
      keys.sort(PAIR_ORDER);
      for (Pair k : keys) {
        long[] v = sums.get(k);
        out.add(RowFactory.create(KIND_RELATION, null, k.a(), k.b(), v[0], v[1], null, null,
            null, null, null, null, null));
      }
      return out.iterator();
    };
    return updates.mapPartitions(fn, Encoders.row(OUTPUT));
  }

  /**
   * The step on plain arrays, for the tests' comparison with the Python oracle (py4j). A visit's
   * or read's attributes travel as one string, kept as it is (the tests pass key, value, ...
   * joined by U+0001; "" = none). Returns [state or null, relations, newSupport, late sources,
   * changed]; the state is [read point, time, visits joined by U+0000, attributes joined by
   * U+0000].
   */
  public static Object[] stepForTest(String stateRp, long stateTimeUs, String[] stateVisits,
                                     String[] stateAttributes, String[] seenA, String[] seenB,
                                     String[] rps, long[] times, String[] sources,
                                     String[] readAttributes, long watermarkUs, long dwellUs,
                                     long idleUs, int maxVisits) {
    ObjectState st = null;
    if (stateRp != null) {
      st = new ObjectState();
      st.readPoint = stateRp;
      st.timeUs = stateTimeUs;
      st.visits = new ArrayList<>(List.of(stateVisits));
      st.attributes = new ArrayList<>(List.of(stateAttributes));
      st.seenA = new ArrayList<>(List.of(seenA));
      st.seenB = new ArrayList<>(List.of(seenB));
      st = ObjectState.fromBytes(st.toBytes());  // through the stored form
    }
    List<Read> reads = new ArrayList<>();
    for (int k = 0; k < rps.length; k++) {
      reads.add(new Read(rps[k], times[k], sources[k], readAttributes[k]));
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
    String[] nextState = null;
    if (next != null) {
      nextState = new String[] {next.readPoint, Long.toString(next.timeUs),
          String.join("\u0000", next.visits), String.join("\u0000", next.attributes)};
    }
    return new Object[] {nextState, rel, sup, late, out.changed};
  }
}
