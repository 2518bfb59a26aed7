"""Profile one single-stream TCP run through dataplane and through plain routing with perf
(system-wide, call graphs); reports go to /tmp/perf-<mode>.data. Needs Debian's linux-perf."""
import subprocess, sys, time
sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__))))
from bench import baselines
from dataplane import lab
from dataplane.traffic import iperf, wait_listening
lab.down(); lab.up(2, [256], per_host=1, registry="none")
pairs = baselines.setup(2)
pairs["dataplane"] = [{"name": "dpl-h1-v256-1"}, {"name": "dpl-h2-v256-1", "ip": "10.1.0.21"}]
try:
    for mode in ("dataplane", "routing"):
        a, b = pairs[mode]
        srv = subprocess.Popen(["ip","netns","exec",b["name"],"iperf3","-s","-1","-B",b["ip"]], stdout=subprocess.DEVNULL)
        wait_listening(b["name"], 5201)
        cli = subprocess.Popen(["ip","netns","exec",a["name"],"iperf3","-c",b["ip"],"-t","6","-J"], stdout=subprocess.PIPE)
        time.sleep(1.5)
        subprocess.run(["perf","record","-a","-g","-o",f"/tmp/perf-{mode}.data","--","sleep","3"], capture_output=True)
        out = cli.communicate()[0]; srv.wait()
        import json; print(mode, json.loads(out)["end"]["sum_received"]["bits_per_second"]/1e9)
finally:
    lab.down()
