"""The specs, one module per concern: a job (input, labels, method, engines, train, runtime, output,
storage), the nightly pipeline, and ``--set`` overrides. Every model refuses unknown fields and describes
every field; ``outcome_hash()`` covers exactly the fields that can change a result."""

from batchlabel.config.engines import EngineSpec, HFEngineSpec, OpenAIEngineSpec, TogetherEngineSpec, VLLMEngineSpec
from batchlabel.config.input import InputSpec, SplitSpec
from batchlabel.config.job import JobSpec, load_job, load_yaml, parse_job
from batchlabel.config.labels import LabelNormalizer, LabelSpec
from batchlabel.config.methods import (
    BUNDLED_ENCODER,
    ClassifierMethod,
    CustomMethod,
    EmbedMethod,
    FewShotSpec,
    MethodSpec,
    PromptMethod,
    ScoreMethod,
)
from batchlabel.config.output import EvalSpec, OutputSpec
from batchlabel.config.runtime import RuntimeSpec
from batchlabel.config.storage import StorageSpec
from batchlabel.config.train import FullTrain, HeadTrain, InstructTrain, LoraTrain, TrainSpec

__all__ = [
    "BUNDLED_ENCODER", "ClassifierMethod", "CustomMethod", "EmbedMethod", "EngineSpec", "EvalSpec", "FewShotSpec",
    "FullTrain", "HFEngineSpec", "HeadTrain", "InputSpec", "InstructTrain", "JobSpec", "LabelNormalizer", "LabelSpec",
    "LoraTrain", "MethodSpec", "OpenAIEngineSpec", "OutputSpec", "PromptMethod", "RuntimeSpec", "ScoreMethod",
    "SplitSpec", "StorageSpec", "TogetherEngineSpec", "TrainSpec", "VLLMEngineSpec", "load_job", "load_yaml",
    "parse_job",
]
