"""The long name tables of :mod:`kubelet_sim.config.kubelet`: upstream KubeletConfiguration fields, gates.

Kept apart so config.py holds the logic; both tables are plain frozensets of Go spellings.
"""

from __future__ import annotations

from typing import Final

__all__ = ["OTHER_FEATURE_GATES", "UPSTREAM_FIELDS"]

# Every top-level v1beta1 KubeletConfiguration field (json tags of KL:config/v1beta1/types.go,
# plus podHousekeepingPeriod and memoryReservationPolicy from trunk). Those not in
# config.FIELD_TABLE are accepted, logged once and ignored.
UPSTREAM_FIELDS: Final = frozenset(
    """
    enableServer staticPodPath podLogsDir syncFrequency fileCheckFrequency httpCheckFrequency
    staticPodURL staticPodURLHeader address port readOnlyPort tlsCertFile tlsPrivateKeyFile
    tlsCipherSuites tlsCurvePreferences tlsMinVersion rotateCertificates serverTLSBootstrap
    authentication authorization registryPullQPS registryBurst
    imagePullCredentialsVerificationPolicy preloadedImagesVerificationAllowlist eventRecordQPS
    eventBurst enableDebuggingHandlers enableContentionProfiling healthzPort
    healthzBindAddress oomScoreAdj clusterDomain clusterDNS streamingConnectionIdleTimeout
    nodeStatusUpdateFrequency nodeStatusReportFrequency nodeLeaseDurationSeconds
    imageMinimumGCAge imageMaximumGCAge imageGCHighThresholdPercent imageGCLowThresholdPercent
    volumeStatsAggPeriod kubeletCgroups systemCgroups cgroupRoot cgroupsPerQOS cgroupDriver
    cpuManagerPolicy singleProcessOOMKill cpuManagerPolicyOptions cpuManagerReconcilePeriod
    memoryManagerPolicy topologyManagerPolicy topologyManagerScope
    topologyManagerPolicyOptions qosReserved runtimeRequestTimeout hairpinMode maxPods podCIDR
    podPidsLimit resolvConf runOnce cpuCFSQuota cpuCFSQuotaPeriod nodeStatusMaxImages
    maxOpenFiles contentType kubeAPIQPS kubeAPIBurst serializeImagePulls maxParallelImagePulls
    evictionHard evictionSoft evictionSoftGracePeriod evictionPressureTransitionPeriod
    evictionMaxPodGracePeriod evictionMinimumReclaim mergeDefaultEvictionSettings podsPerCore
    enableControllerAttachDetach protectKernelDefaults makeIPTablesUtilChains
    iptablesMasqueradeBit iptablesDropBit featureGates failSwapOn memorySwap
    containerLogMaxSize containerLogMaxFiles containerLogMaxWorkers
    containerLogMonitorInterval configMapAndSecretChangeDetectionStrategy systemReserved
    kubeReserved reservedSystemCPUs showHiddenMetricsForVersion systemReservedCgroup
    kubeReservedCgroup enforceNodeAllocatable allowedUnsafeSysctls volumePluginDir providerID
    kernelMemcgNotification logging enableSystemLogHandler enableSystemLogQuery
    shutdownGracePeriod shutdownGracePeriodCriticalPods shutdownGracePeriodByPodPriority
    crashLoopBackOff reservedMemory enableProfilingHandler enableDebugFlagsHandler
    seccompDefault memoryThrottlingFactor memoryReservationPolicy registerWithTaints
    registerNode tracing localStorageCapacityIsolation containerRuntimeEndpoint
    imageServiceEndpoint failCgroupV1 userNamespaces podHousekeepingPeriod
    """.split()  # noqa: SIM905
)

# Gates accepted in featureGates besides config.FEATURE_GATE_DEFAULTS: kube_features.go (v1.32-v1.35),
# component-base, apiserver and client-go gates registered in the kubelet's gate, and the
# AllAlpha/AllBeta switches. Their defaults are not modelled; a name outside both sets fails.
OTHER_FEATURE_GATES: Final = frozenset(
    """
    AllAlpha AllBeta AllowDNSOnlyNodeCSR AllowInsecureKubeletCertificateSigningRequests
    AllowOverwriteTerminationGracePeriodSeconds AllowParsingUserUIDFromCertAuth
    AllowUnsafeMalformedObjectDeletion AnonymousAuthConfigurableEndpoints AnyVolumeDataSource
    APIResponseCompression APIServerIdentity APIServerTracing APIServingWithRoutine AppArmor
    AppArmorFields AggregatedDiscoveryRemoveBetaType AuthorizeNodeWithSelectors
    AuthorizeWithSelectors BtreeWatchCache CBORServingAndStorage
    ClearingNominatedNodeNameAfterBinding ClientsAllowCBOR ClientsPreferCBOR
    ClusterTrustBundle ClusterTrustBundleProjection ComponentFlagz ComponentSLIs
    ComponentStatusz ConcurrentWatchObjectDecode ConsistentListFromCache ContainerCheckpoint
    ContainerRestartRules ContainerStopSignals ContextualLogging CoordinatedLeaderElection
    CPUManager CPUManagerPolicyAlphaOptions CPUManagerPolicyBetaOptions
    CPUManagerPolicyOptions CronJobsScheduledAnnotation CrossNamespaceVolumeDataSource
    CSIMigrationPortworx CSIVolumeHealth CustomCPUCFSQuotaPeriod DeclarativeValidation
    DeclarativeValidationTakeover DeploymentReplicaSetTerminatingReplicas
    DetectCacheInconsistency DevicePluginCDIDevices DisableAllocatorDualWrite
    DisableCloudProviders DisableCPUQuotaWithExclusiveCPUs
    DisableKubeletCloudCredentialProviders DisableNodeKubeProxyVersion DRAAdminAccess
    DRAConsumableCapacity DRADeviceBindingConditions DRADeviceTaints DRAExtendedResource
    DRAPartitionableDevices DRAPrioritizedList DRAResourceClaimDeviceStatus
    DRASchedulerFilterTimeout DynamicResourceAllocation ElasticIndexedJob EnvFiles EventedPLEG
    ExecProbeTimeout ExternalServiceAccountTokenSigner GracefulNodeShutdown
    GracefulNodeShutdownBasedOnPodPriority HonorPVReclaimPolicy HostnameOverride
    HPAContainerMetrics HPAScaleToZero ImageVolume ImageVolumeWithDigest
    InformerResourceVersion InOrderInformers InPlacePodVerticalScaling
    InPlacePodVerticalScalingAllocatedStatus InPlacePodVerticalScalingExclusiveCPUs
    InPlacePodVerticalScalingExclusiveMemory InTreePluginPortworxUnregister
    JobBackoffLimitPerIndex JobManagedBy JobPodFailurePolicy JobPodReplacementPolicy
    JobSuccessPolicy KMSv1 KubeletCgroupDriverFromCRI KubeletCrashLoopBackOffMax
    KubeletFineGrainedAuthz KubeletInUserNamespace KubeletPodResourcesDynamicResources
    KubeletPodResourcesGet KubeletPodResourcesListUseActivePods KubeletPSI
    KubeletRegistrationGetOnExistsOnly KubeletSeparateDiskGC KubeletTracing
    KubeProxyDrainingTerminatingNodes ListFromCacheSnapshot LoadBalancerIPMode
    LocalStorageCapacityIsolationFSQuotaMonitoring LogarithmicScaleDown LoggingAlphaOptions
    LoggingBetaOptions MatchLabelKeysInPodAffinity MatchLabelKeysInPodTopologySpread
    MaxUnavailableStatefulSet MemoryManager MemoryQoS MultiCIDRServiceAllocator
    MutableCSINodeAllocatableCount MutatingAdmissionPolicy NFTablesProxyMode
    NodeDeclaredFeatures NodeInclusionPolicyInPodTopologySpread NodeLogQuery NodeSwap
    NominatedNodeNameForExpectation OpenAPIEnums OrderedNamespaceDeletion
    PDBUnhealthyPodEvictionPolicy PersistentVolumeLastPhaseTransitionTime
    PodAndContainerStatsFromCRI PodCertificateRequest PodDeletionCost PodDisruptionConditions
    PodHostIPs PodIndexLabel PodLevelResources PodLifecycleSleepAction
    PodLogsQuerySplitStreams PodObservedGenerationTracking PodReadyToStartContainersCondition
    PodSchedulingReadiness PodTopologyLabelsAdmission PortForwardWebsockets
    PreferSameTrafficDistribution ProcMountType QOSReserved RecoverVolumeExpansionFailure
    RecursiveReadOnlyMounts RelaxedDNSSearchValidation RelaxedEnvironmentVariableValidation
    RelaxedServiceNameValidation ReloadKubeletServerCertificateFile RemoteRequestHeaderUID
    ResilientWatchCacheInitialization ResourceHealthStatus RetryGenerateName
    RotateKubeletServerCertificate SchedulerAsyncPreemption SchedulerPopFromBackoffQ
    SchedulerQueueingHints SELinuxChangePolicy SELinuxMount SELinuxMountReadWriteOncePod
    SeparateCacheWatchRPC SeparateTaintEvictionController ServiceAccountTokenJTI
    ServiceAccountTokenNodeBinding ServiceAccountTokenNodeBindingValidation
    ServiceAccountTokenPodNodeInfo ServiceTrafficDistribution SidecarContainers
    SizeBasedListCostEstimate SizeMemoryBackedVolumes StatefulSetAutoDeletePVC
    StatefulSetStartOrdinal StorageCapacityScoring StorageNamespaceIndex StorageVersionAPI
    StorageVersionHash StorageVersionMigrator StrictCostEnforcementForVAP
    StrictCostEnforcementForWebhooks StrictIPCIDRValidation
    StructuredAuthenticationConfiguration StructuredAuthorizationConfiguration
    SupplementalGroupsPolicy SystemdWatchdog TokenRequestServiceAccountUIDValidation
    TopologyAwareHints TopologyManagerPolicyAlphaOptions TopologyManagerPolicyBetaOptions
    TopologyManagerPolicyOptions TranslateStreamCloseWebsocketRequests
    UnauthenticatedHTTP2DOSMitigation UnknownVersionInteroperabilityProxy
    UserNamespacesPodSecurityStandards UserNamespacesSupport VolumeAttributesClass
    VolumeCapacityPriority WatchBookmark WatchCacheInitializationPostStartHook
    WatchFromStorageWithoutResourceVersion WatchList WatchListClient
    WindowsCPUAndMemoryAffinity WindowsGracefulNodeShutdown WindowsHostNetwork WinDSR
    WinOverlay
    """.split()  # noqa: SIM905
)
