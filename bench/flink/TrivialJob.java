/*
 * The Flink side of bench/bench_yarn.py's comparison: the same trivial bounded job as emrflow's
 * (1000 numbers, map +1, discarding sink), compiled against the flink-dist jar of the Flink
 * installed from PyPI (bench/flink_yarn.py builds bench/.cache/flink-job/trivial-job.jar).
 */
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;

public class TrivialJob {
    public static void main(String[] args) throws Exception {
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.fromSequence(0, 999)
                .map(new MapFunction<Long, Long>() {
                    @Override
                    public Long map(Long value) {
                        return value + 1;
                    }
                })
                .sinkTo(new DiscardingSink<>());
        env.execute("trivial");
    }
}
