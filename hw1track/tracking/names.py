"""The names the project files things under in MLflow: experiments, tags and artifacts.

Runs are written by one module and read back by others (analysis, reports,
notebooks, `hw1track doctor`), often in another process or months later; a name
spelt in one place only cannot drift between the writer and its readers.
"""

EXPERIMENT_PREFIX = "hw1/"  # MLflow experiment of `part1_1a` is `hw1/part1_1a`

# Identity and provenance of a run.
TAG_EXPERIMENT = "hw1track.experiment"
TAG_PRESET = "hw1track.preset"
TAG_ROLE = "hw1track.role"  # parent, child or report
TAG_CONFIG_HASH = "hw1track.config_hash"  # a child's identity: see `identity.config_hash`
TAG_GROUP = "hw1track.group"  # a child's configuration without its seed: the same for all its replicates
TAG_RUN_HASH = "hw1track.run_hash"  # a parent's identity: experiment, preset, code version and whole config
TAG_REUSED_PREFIX = "hw1track.reused."  # on a parent: hw1track.reused.<config hash> = id of the child it reuses
TAG_GIT_COMMIT = "hw1track.git_commit"
TAG_MNIST_MD5 = "hw1track.mnist_md5"  # on MNIST parents only, as before Fashion-MNIST came
TAG_DATASET = "hw1track.dataset"  # on a parent that trains on images: mnist or fashion-mnist (also its param)
TAG_DATA_MD5 = "hw1track.data_md5"  # that image set's checksum (`data.ImageSet.checksum`)
TAG_CODE_VERSION = "hw1track.code_version"
TAG_SEED = "hw1track.seed"  # the invocation's base seed; every model logs its own as the param `seed`
TAG_TORCH_THREADS = "hw1track.torch_threads"  # float reductions are split per thread: the last digits depend on it
TAG_VERSION_PREFIX = "hw1track.version."  # hw1track.version.<package> = its installed version
TAG_REUSE = "hw1track.reuse"  # on a parent: whether it reused finished models ("false" after --force)

# The process that opened a run, so that one left RUNNING by `kill -9` can be recognised (see `processes`).
TAG_HOST = "hw1track.host"
TAG_PID = "hw1track.pid"
TAG_PROCESS_START = "hw1track.process_start"  # clock ticks since boot (Linux), absent elsewhere

# What a result turned out to be.
TAG_STUCK = "hw1track.stuck"  # "true" when a fit collapsed to a near-constant function (dead ReLUs)

# Params that say which model a child is, and which replicate of it (see `hw1track.study.replicates`).
PARAM_MODEL = "model"  # the same in every replicate of a model: the child's run name without `#r`
PARAM_REPLICATE = "replicate"  # 0, 1, ...: which replicate of its configuration a model is
PARAM_SEED = "seed"  # the model's own seed: initialisation and data order
PARAM_SEEDS = "seeds"  # on a parent: how many replicates of every configuration were asked for
# `model` and `replicate` again as tags, set by the call that creates a child: a worker that dies before the
# params are logged leaves a child that its retried task must still find (`orphans.earlier_attempts`).
TAG_MODEL, TAG_REPLICATE = "hw1track.model", "hw1track.replicate"
CLAIMS_ARTIFACT = "claims.json"  # on a parent: the homework's questions answered across seeds (see `reporting.claims`)

# On a child trained to a stopping rule (part1_3b): its last trained epoch, and 1 if the rule stopped it, 0 if the cap.
METRIC_EPOCHS_TRAINED, METRIC_STOPPED_BY_RULE = "epochs_trained", "stopped_by_rule"

HESSIAN_DENSITY_ARTIFACT = "hessian_density.csv"  # on a child: SLQ nodes and weights per probe (part1_3c_ii)
LOSS_SURFACE_ARTIFACT = "loss_surface.csv"  # on a parent: the training loss on planes around solutions (part1_3c_i)
PARAM_PAIR = "pair"  # part1_3c_i: the interpolated pair a child was trained for, and a column of interpolation.csv
SHARED_INIT, INDEPENDENT_INIT = "shared_init", "independent_init"  # the values of `pair`
SPECTRUM_BY_TOLERANCE_ARTIFACT = "spectrum_by_tolerance.csv"  # on a child: minimal ratio etc. per τ (part1_2c)
HESSIAN_EIGENVALUES_ARTIFACT = "hessian_eigenvalues.pt"  # on a child: the full Hessian's eigenvalues (part1_2c)
WEIGHTS_ARTIFACT = "weights/final.pt"  # a model's final state_dict, loadable with torch.load(weights_only=True)
