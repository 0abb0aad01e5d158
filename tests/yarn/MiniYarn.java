/*
 * A real YARN for emrflow's tests: Hadoop's MiniYARNCluster (one ResourceManager and N
 * NodeManagers in this JVM; containers are real processes started by the NodeManagers) on a
 * MiniDFSCluster (one NameNode, one DataNode) as the default file system, as on EMR. A
 * `file:///` default file system is not an option: skein 0.8.2's driver dies on it with
 * `Cannot invoke "String.equals(Object)" because "srcHost" is null` (its Utils.equalFs compares
 * the null hosts of two `file:` URIs), so every submission fails.
 *
 * Run it with Java's single-file source launcher:
 *
 *   java -cp 'tests/yarn/target/lib/*' tests/yarn/MiniYarn.java --conf-dir DIR [options]
 *
 * Options (all optional except --conf-dir):
 *   --conf-dir DIR         where to write yarn-site.xml, core-site.xml, log4j.properties (HADOOP_CONF_DIR)
 *   --work-dir DIR         the cluster's state: NodeManagers' local and log dirs (DIR/cluster),
 *                          HDFS's blocks (DIR/dfs), this program's log (DIR/minicluster.log);
 *                          default: the current directory. Aggregated logs go to hdfs:///app-logs.
 *   --lib-dir DIR          the jar directory; becomes yarn.application.classpath (default: none)
 *   --nodemanagers N       NodeManagers (default 2)
 *   --nm-memory-mb MB      memory per NodeManager (default 4096)
 *   --nm-vcores N          vcores per NodeManager (default 4)
 *   --start-timeout-s S    give up when the cluster is not up after S seconds (default 120)
 *   --nm-web 0|1           NodeManager web servers: logs of running containers (REST API, `yarn logs`);
 *                          default 1 (0 saves a few seconds of start per NodeManager)
 *
 * When the ResourceManager's port is bound and every NodeManager has registered, it writes the
 * configuration for clients and prints one line on stdout:
 *
 *   MINIYARN READY {"rm_address": "host:port", "web_address": "host:port", ...}
 *
 * Then it runs until stdin closes or it gets SIGTERM/SIGINT, and stops the cluster (the
 * NodeManagers kill their containers). Its own log goes to ./minicluster.log; warnings also to
 * stderr (and Java's single-file launcher compiles this file first, a few seconds). Exit status 0 after a clean stop, 1 when the cluster does not start, 2 on bad options.
 */

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.net.NetUtils;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;
import org.apache.log4j.PropertyConfigurator;

public class MiniYarn {

    /** Variables a container inherits from the NodeManager's environment (EMR's list plus JDK_JAVA_OPTIONS). */
    static final String ENV_WHITELIST = String.join(",",
            "JAVA_HOME", "HADOOP_COMMON_HOME", "HADOOP_HDFS_HOME", "HADOOP_CONF_DIR",
            "CLASSPATH_PREPEND_DISTCACHE", "HADOOP_YARN_HOME", "HADOOP_HOME", "PATH", "LANG", "TZ",
            "HADOOP_MAPRED_HOME", "JDK_JAVA_OPTIONS");

    public static void main(String[] args) throws Exception {
        Map<String, String> opts = parse(args);
        File confDir = new File(opts.get("--conf-dir")).getAbsoluteFile();
        int nodeManagers = intOpt(opts, "--nodemanagers", 2);
        int nmMemoryMb = intOpt(opts, "--nm-memory-mb", 4096);
        int nmVcores = intOpt(opts, "--nm-vcores", 4);
        long startTimeoutMs = intOpt(opts, "--start-timeout-s", 120) * 1000L;
        boolean nmWeb = intOpt(opts, "--nm-web", 1) != 0;
        File workDir = new File(opts.getOrDefault("--work-dir", ".")).getAbsoluteFile().toPath().normalize().toFile();
        workDir.mkdirs();
        // MiniYARNCluster puts its directories under GenericTestUtils.getTestDir(), i.e. test.build.data.
        System.setProperty("test.build.data", new File(workDir, "cluster").getPath());
        configureLogging(new File(workDir, "minicluster.log"));

        long t0 = System.nanoTime();
        YarnConfiguration conf = clusterConf(workDir, opts.get("--lib-dir"), confDir, nmMemoryMb, nmVcores);
        MiniDFSCluster[] dfs = {null};
        // 1 ResourceManager, N NodeManagers with 1 local and 1 log dir each, NodeManager web servers
        // unless --nm-web 0 (they serve running containers' logs; each costs seconds of start).
        MiniYARNCluster cluster = new MiniYARNCluster("emrflow", nodeManagers, 1, 1, nmWeb);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> stop(cluster, dfs[0]), "miniyarn-shutdown"));
        try {
            dfs[0] = new MiniDFSCluster.Builder(conf, new File(workDir, "dfs"))
                    .numDataNodes(1).format(true).build();
            dfs[0].waitActive();
            conf.set("fs.defaultFS", dfs[0].getFileSystem().getUri().toString());
            cluster.init(conf);
            cluster.start();
            Configuration live = cluster.getConfig();
            String rmAddress = waitForRmAddress(live, t0, startTimeoutMs);
            long left = Math.max(1000, startTimeoutMs - (System.nanoTime() - t0) / 1_000_000);
            if (!cluster.waitForNodeManagersToConnect(left)) {
                throw new IllegalStateException(nodeManagers + " NodeManagers did not register with the "
                        + "ResourceManager within " + startTimeoutMs / 1000 + " s; see minicluster.log");
            }
            writeClientConf(live, confDir);
            double seconds = (System.nanoTime() - t0) / 1e9;
            System.out.println("MINIYARN READY {"
                    + json("rm_address", rmAddress) + ", "
                    + json("default_fs", live.get("fs.defaultFS")) + ", "
                    + json("web_address", live.get(YarnConfiguration.RM_WEBAPP_ADDRESS)) + ", "
                    + json("conf_dir", confDir.getPath()) + ", "
                    + json("work_dir", cluster.getTestWorkDir().getAbsolutePath()) + ", "
                    + json("app_log_dir", live.get(YarnConfiguration.NM_REMOTE_APP_LOG_DIR)) + ", "
                    + "\"nodemanagers\": " + nodeManagers + ", "
                    + "\"start_seconds\": " + String.format("%.2f", seconds) + "}");
            System.out.flush();
        } catch (Throwable e) {
            System.err.println("MINIYARN FAILED " + e);
            e.printStackTrace();
            System.exit(1);
        }
        // Run until stdin closes (the parent went away) or a signal runs the shutdown hook.
        InputStream in = System.in;
        byte[] buf = new byte[256];
        while (in.read(buf) >= 0) {
            // ignore input
        }
        System.exit(0);
    }

    static YarnConfiguration clusterConf(File workDir, String libDir, File confDir, int nmMemoryMb, int nmVcores) {
        YarnConfiguration c = new YarnConfiguration();
        c.set("hadoop.tmp.dir", new File(workDir, "hadoop-tmp").getPath());
        // HDFS: one DataNode, so one replica; few handler threads.
        c.setInt("dfs.replication", 1);
        c.setInt("dfs.namenode.handler.count", 4);
        c.setInt("dfs.namenode.service.handler.count", 2);
        c.setInt("dfs.datanode.handler.count", 2);
        c.setBoolean("dfs.namenode.redundancy.considerLoad", false);
        // Resources: what the NodeManagers offer and what one container may ask for.
        c.setBoolean("yarn.minicluster.control-resource-monitoring", true);
        c.setInt("yarn.minicluster.yarn.nodemanager.resource.memory-mb", nmMemoryMb);
        c.setInt("yarn.nodemanager.resource.memory-mb", nmMemoryMb);
        c.setInt("yarn.nodemanager.resource.cpu-vcores", nmVcores);
        c.setInt("yarn.scheduler.minimum-allocation-mb", 128);
        c.setInt("yarn.scheduler.maximum-allocation-mb", nmMemoryMb);
        c.setInt("yarn.scheduler.minimum-allocation-vcores", 1);
        c.setInt("yarn.scheduler.maximum-allocation-vcores", nmVcores);
        // The NodeManager kills a container whose process tree exceeds its physical memory.
        c.setBoolean("yarn.nodemanager.pmem-check-enabled", true);
        // ... by polling the process tree: with the default memory.enforced=true Hadoop 3.5's
        // ContainersMonitorImpl.checkLimit returns at once (it leaves it to cgroups, which are off here).
        c.setBoolean("yarn.nodemanager.resource.memory.enforced", false);
        c.setBoolean("yarn.nodemanager.vmem-check-enabled", false);
        c.setInt("yarn.nodemanager.container-monitor.interval-ms", 1000);
        c.setFloat("yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage", 99.5f);
        c.set("yarn.nodemanager.env-whitelist", ENV_WHITELIST);
        // Logs: aggregated into HDFS when an application ends (`yarn logs`), as on EMR.
        c.setBoolean("yarn.log-aggregation-enable", true);
        c.set("yarn.nodemanager.remote-app-log-dir", "/app-logs");
        c.setInt("yarn.nodemanager.delete.debug-delay-sec", 0);
        // Capacity scheduler: `default` (90 %) and `small` (10 %, hard limit) for queue tests.
        c.set("yarn.resourcemanager.scheduler.class",
                "org.apache.hadoop.yarn.server.resourcemanager.scheduler.capacity.CapacityScheduler");
        c.set("yarn.scheduler.capacity.root.queues", "default,small");
        c.set("yarn.scheduler.capacity.root.default.capacity", "90");
        c.set("yarn.scheduler.capacity.root.default.maximum-capacity", "100");
        c.set("yarn.scheduler.capacity.root.small.capacity", "10");
        c.set("yarn.scheduler.capacity.root.small.maximum-capacity", "10");
        c.set("yarn.scheduler.capacity.maximum-am-resource-percent", "1.0");
        c.setInt("yarn.resourcemanager.am.max-attempts", 2);
        // Fast scheduling on a small host; few handler threads (2 cores shared by everything).
        c.setInt("yarn.resourcemanager.nodemanagers.heartbeat-interval-ms", 500);
        c.setInt("yarn.resourcemanager.client.thread-count", 4);
        c.setInt("yarn.resourcemanager.scheduler.client.thread-count", 4);
        c.setInt("yarn.resourcemanager.resource-tracker.client.thread-count", 2);
        c.setInt("yarn.resourcemanager.admin.client.thread-count", 1);
        c.setInt("yarn.resourcemanager.amlauncher.thread-count", 2);
        c.setInt("yarn.nodemanager.container-manager.thread-count", 4);
        c.setInt("yarn.nodemanager.localizer.client.thread-count", 2);
        c.setInt("yarn.nodemanager.localizer.fetch.thread-count", 2);
        c.setInt("yarn.nodemanager.delete.thread-count", 1);
        c.setBoolean("yarn.timeline-service.enabled", false);
        // Clients (skein's driver and ApplicationMaster): fail within seconds, not 15 min, when the RM is gone.
        c.setLong("yarn.resourcemanager.connect.max-wait.ms", 10_000);
        c.setLong("yarn.resourcemanager.connect.retry-interval.ms", 1_000);
        // Containers' JVMs (skein's ApplicationMaster) find Hadoop's classes here.
        if (libDir != null) {
            String lib = new File(libDir).getAbsolutePath();
            c.set("yarn.application.classpath", confDir.getPath() + "," + lib + "/*");
        }
        return c;
    }

    /** MiniYARNCluster's start() can return before the RM has put its bound port into the configuration. */
    static String waitForRmAddress(Configuration live, long t0, long timeoutMs) throws Exception {
        while (true) {
            String address = live.get(YarnConfiguration.RM_ADDRESS);
            if (address != null && !address.endsWith(":0")) {
                InetSocketAddress sock = NetUtils.createSocketAddr(address);
                try (Socket s = new Socket()) {
                    s.connect(sock, 1000);
                    return address;
                } catch (IOException notYet) {
                    // bound in the configuration but not yet accepting
                }
            }
            if ((System.nanoTime() - t0) / 1_000_000 > timeoutMs) {
                throw new IllegalStateException("the ResourceManager did not bind its port ("
                        + YarnConfiguration.RM_ADDRESS + "=" + address + ") within " + timeoutMs / 1000 + " s");
            }
            Thread.sleep(100);
        }
    }

    /** Writes yarn-site.xml (the live configuration), core-site.xml and log4j.properties; each file appears whole. */
    static void writeClientConf(Configuration live, File confDir) throws IOException {
        confDir.mkdirs();
        writeAtomically(new File(confDir, "yarn-site.xml"), out -> live.writeXml(out));
        Configuration core = new Configuration(false);
        core.set("fs.defaultFS", live.get("fs.defaultFS"));
        core.setInt("dfs.replication", 1);
        core.set("hadoop.tmp.dir", live.get("hadoop.tmp.dir"));
        writeAtomically(new File(confDir, "core-site.xml"), out -> core.writeXml(out));
        String log4j = "log4j.rootLogger=WARN, stderr\n"
                + "log4j.appender.stderr=org.apache.log4j.ConsoleAppender\n"
                + "log4j.appender.stderr.Target=System.err\n"
                + "log4j.appender.stderr.layout=org.apache.log4j.PatternLayout\n"
                + "log4j.appender.stderr.layout.ConversionPattern=%d{HH:mm:ss} %p %c{1}: %m%n\n"
                + "log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR\n";
        writeAtomically(new File(confDir, "log4j.properties"), out -> out.write(log4j.getBytes("UTF-8")));
    }

    interface Writer {
        void write(OutputStream out) throws IOException;
    }

    static void writeAtomically(File target, Writer writer) throws IOException {
        File tmp = new File(target.getPath() + ".tmp");
        try (OutputStream out = new FileOutputStream(tmp)) {
            writer.write(out);
        }
        Files.move(tmp.toPath(), target.toPath(), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    static void configureLogging(File logFile) {
        Properties p = new Properties();
        p.setProperty("log4j.rootLogger", "INFO, file, stderr");
        p.setProperty("log4j.appender.file", "org.apache.log4j.FileAppender");
        p.setProperty("log4j.appender.file.File", logFile.getPath());
        p.setProperty("log4j.appender.file.Append", "false");
        p.setProperty("log4j.appender.file.layout", "org.apache.log4j.PatternLayout");
        p.setProperty("log4j.appender.file.layout.ConversionPattern", "%d{HH:mm:ss,SSS} %p [%t] %c{1}: %m%n");
        p.setProperty("log4j.appender.stderr", "org.apache.log4j.ConsoleAppender");
        p.setProperty("log4j.appender.stderr.Target", "System.err");
        p.setProperty("log4j.appender.stderr.Threshold", "ERROR");
        p.setProperty("log4j.appender.stderr.layout", "org.apache.log4j.PatternLayout");
        p.setProperty("log4j.appender.stderr.layout.ConversionPattern", "%d{HH:mm:ss} %p %c{1}: %m%n");
        PropertyConfigurator.configure(p);
    }

    static void stop(MiniYARNCluster cluster, MiniDFSCluster dfs) {
        try {
            cluster.stop();
        } catch (Throwable e) {
            System.err.println("MINIYARN stop of YARN failed: " + e);
        }
        if (dfs != null) {
            try {
                dfs.shutdown();
            } catch (Throwable e) {
                System.err.println("MINIYARN stop of HDFS failed: " + e);
            }
        }
    }

    static Map<String, String> parse(String[] args) {
        Map<String, String> opts = new HashMap<>();
        for (int i = 0; i < args.length; i += 2) {
            String key = args[i];
            if (!key.startsWith("--") || i + 1 >= args.length) {
                usage("expected --option VALUE pairs, got '" + key + "'");
            }
            opts.put(key, args[i + 1]);
        }
        for (String key : opts.keySet()) {
            if (!java.util.Set.of("--conf-dir", "--work-dir", "--lib-dir", "--nodemanagers", "--nm-memory-mb", "--nm-vcores",
                    "--start-timeout-s", "--nm-web").contains(key)) {
                usage("unknown option " + key);
            }
        }
        if (!opts.containsKey("--conf-dir")) {
            usage("--conf-dir DIR is required");
        }
        return opts;
    }

    static int intOpt(Map<String, String> opts, String key, int dflt) {
        String v = opts.get(key);
        if (v == null) {
            return dflt;
        }
        try {
            return Integer.parseInt(v);
        } catch (NumberFormatException e) {
            usage(key + " expects a whole number, got '" + v + "'");
            return dflt;
        }
    }

    static void usage(String problem) {
        System.err.println("MiniYarn: " + problem + "\nusage: java -cp 'LIB/*' MiniYarn.java --conf-dir DIR "
                + "[--work-dir DIR] [--lib-dir DIR] [--nodemanagers N] [--nm-memory-mb MB] [--nm-vcores N] [--start-timeout-s S] [--nm-web 0|1]");
        System.exit(2);
    }

    static String json(String key, String value) {
        String v = value == null ? "null" : "\"" + value.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
        return "\"" + key + "\": " + v;
    }
}
