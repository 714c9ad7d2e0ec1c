"""The zoo. Importing this package registers every model family."""

# Each family module registers its models on import.
from cnn_zoo.models import lenet  # noqa: F401
from cnn_zoo.models import alexnet  # noqa: F401
from cnn_zoo.models import vgg  # noqa: F401
from cnn_zoo.models import googlenet  # noqa: F401
from cnn_zoo.models import resnet  # noqa: F401
from cnn_zoo.models import densenet  # noqa: F401
from cnn_zoo.models.initializers import WEIGHT_INITS  # noqa: F401
from cnn_zoo.models.registry import (ModelSpec, check_input_shape, get,  # noqa: F401
                                     input_shape, names, spec)
