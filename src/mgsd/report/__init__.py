"""mgsd.report: the paper's tables (`tables`) and figures (`plots`) from evaluation records and
training logs. Never imports torch or `mgsd.model`, so reports run on any machine."""
