"""A reproducer, not part of tests/reliability/run: ops_release publishing
(and taking out the version LAG versions back) as fast as it can while
ops_pod deploys the channel's tip of the same local repository, once for
real and twice in check mode, in a loop, for SECONDS; every failure is
printed with its count, then what is left in the store's staging and trash.

    tests/systemd/sandbox -- python3 $PWD/tests/reliability/repo_race_probe.py SECONDS LAG

With LAG 3 the version a deploy resolved from tip is often taken out of the
repository before the deploy reads its files: the deploy fails ("volume
conf of pod shop version N: cannot extract conf.tar: No such file or
directory") and rolls back cleanly, nothing left behind. The larger LAG,
the rarer (LAG 30: 3 of 227 deploys failed so, at 17 publishes a
second). Ports come from 23500-23999 (apart from the concurrency test's).
"""

import collections
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import concurrency_scenarios as c  # noqa: E402

c.PORT_RANGE = "23500-23999"


def main(seconds, lag):
    world = c.World(c.kit.start("ops-repo-race-"), random.Random(1))
    first = world.publish_request("0")
    first.run()
    c.expect(first.succeeded(), "version 0 is published", first.result)
    stop = time.monotonic() + seconds
    fails, counts = collections.Counter(), collections.Counter()

    def note(label, request):
        counts[label] += 1
        if not request.succeeded():
            fails[f"{label}: {str(request.result.get('msg'))[:400]}"] += 1

    def publisher():
        k = 1
        while time.monotonic() < stop:
            publish = world.publish_request(str(k))
            publish.run()
            note("publish", publish)
            if k >= lag:
                remove = c.Request("ops_release", "release", repo=world.repo, channel=c.CHANNEL,
                                   label=c.LABEL, name="shop", version=str(k - lag),
                                   state="absent")
                remove.run()
                note("take out", remove)
            k += 1

    def deployer(check_mode):
        while time.monotonic() < stop:
            deploy = world.shop_request("tip")
            deploy.args["keep"] = 2
            deploy.check_mode = check_mode
            deploy.run()
            note("deploy tip" + (" (check mode)" if check_mode else ""), deploy)

    threads = [threading.Thread(target=publisher), threading.Thread(target=deployer, args=(False,)),
               threading.Thread(target=deployer, args=(True,)),
               threading.Thread(target=deployer, args=(True,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(dict(counts))
    for what, n in sorted(fails.items()):
        print(n, what)
    print("left behind:", c.leftovers())
    return 1 if fails or c.leftovers() else 0


if __name__ == "__main__":
    sys.exit(main(float(sys.argv[1]), int(sys.argv[2])))
