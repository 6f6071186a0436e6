"""An example afnext plugin (docs/plugins.md walks through it).

* :class:`~afnext_example_plugin.encoder.ConvFbankEncoder`: an audio encoder with its own feature front end
  (a 64-band log filterbank with a 20 ms hop over 10 s windows, :class:`~afnext_example_plugin.encoder.FbankFrontEnd`);
* :class:`~afnext_example_plugin.connector.MeanPoolConnector`: pools pairs of frames and projects them to the LLM;
* :class:`~afnext_example_plugin.generator.CountGenerator`: a TACoT data generator asking how many sounds an audio
  holds, with a chain citing each one.

Nothing here subclasses afnext: each class implements its kind's interface (``afnext/encoders/base.py``,
``afnext/connectors/base.py``, ``afnext/reasoning/generators/base.py``), and ``conf/`` names them.
"""

__all__ = ["connector", "encoder", "generator"]
