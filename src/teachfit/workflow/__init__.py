"""The workflow layer, Teachfit's one composition root: the rule adapter (:mod:`.adapter`),
config validation and stage-settings checks (:mod:`.config`), the pure plan of what the config
asks for (:mod:`.plan`), and the ``teachfit`` command (:mod:`.cli`). Library code never imports
this package; it reads settings through :mod:`teachfit.schema`."""
