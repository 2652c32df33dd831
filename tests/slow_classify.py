"""galaxy-classify with every batch held back SECONDS (a test's driver: slow enough to be signalled or killed
mid-run): `python tests/slow_classify.py SECONDS <galaxy-classify arguments>`, also as torchrun's script."""
import sys
import time

from galaxy_finetune.inference import predict
from galaxy_finetune.inference.classify import main

if __name__ == "__main__":
    seconds, original = float(sys.argv[1]), predict.CsvPartWriter.write_on_batch_end

    def slow(self, *args, **kwargs):
        time.sleep(seconds)
        return original(self, *args, **kwargs)

    predict.CsvPartWriter.write_on_batch_end = slow
    main(sys.argv[2:])
