"""The names of the metrics a trial reports: one list, which the trainer writes and the search,
adapters and reports read. Errors are fractions in [0, 1]; every validation metric is minimized."""

VAL_OBJECTIVE = "val_objective"  # the upper level's objective (balanced CE blended with fairness)
VAL_BALANCED_LOSS = "val_balanced_loss"  # balanced CE alone: the same score for every trial; breaks ties
VAL_ERROR = "val_error"
VAL_BALANCED_ERROR = "val_balanced_error"
VAL_WORST_CLASS_ERROR = "val_worst_class_error"
VAL_WORST_GROUP_ERROR = "val_worst_group_error"  # group data only: worst (class, group) error
VAL_DEO = "val_deo"  # group data only: difference of equal opportunity

TEST_ERROR = "test_error"
TEST_BALANCED_ERROR = "test_balanced_error"
TEST_WORST_CLASS_ERROR = "test_worst_class_error"
TEST_WORST_GROUP_ERROR = "test_worst_group_error"
TEST_DEO = "test_deo"
TEST_PER_CLASS_ERROR = "test_per_class_error"
TEST_PER_GROUP_ERROR = "test_per_group_error"

CLASS_COUNTS = "class_counts"
GROUP_COUNTS = "group_counts"
LOSS_PARAMETERS = "loss_parameters"
HYPER_STEPS = "hyper_steps"
SKIPPED_HYPER_STEPS = "skipped_hyper_steps"
# a result a restored, already finished trial reports again without training (Ray Tune counts it as an iteration)
REPLAYED = "replayed"

VALIDATION_METRICS = (VAL_OBJECTIVE, VAL_BALANCED_LOSS, VAL_BALANCED_ERROR, VAL_ERROR, VAL_WORST_CLASS_ERROR,
                      VAL_WORST_GROUP_ERROR, VAL_DEO)
GROUP_METRICS = (VAL_WORST_GROUP_ERROR, VAL_DEO)  # reported only on data with group labels
TEST_METRICS = (TEST_ERROR, TEST_BALANCED_ERROR, TEST_WORST_CLASS_ERROR)
TEST_GROUP_METRICS = (TEST_WORST_GROUP_ERROR, TEST_DEO)  # nan (absent) on data without groups
# what a validation metric estimates on the test split: the headline of a report selected by it
TEST_OF = {VAL_OBJECTIVE: TEST_BALANCED_ERROR, VAL_BALANCED_LOSS: TEST_BALANCED_ERROR,
           VAL_BALANCED_ERROR: TEST_BALANCED_ERROR, VAL_ERROR: TEST_ERROR, VAL_WORST_CLASS_ERROR: TEST_WORST_CLASS_ERROR,
           VAL_WORST_GROUP_ERROR: TEST_WORST_GROUP_ERROR, VAL_DEO: TEST_DEO}
LISTS = (TEST_PER_CLASS_ERROR, TEST_PER_GROUP_ERROR, CLASS_COUNTS, GROUP_COUNTS)  # per-class results, not scalars
